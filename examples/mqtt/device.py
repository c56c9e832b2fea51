"""A garage-door device on MQTT over TLS, authenticated by its certificate (paho-mqtt 2).

Usage: python device.py --broker HOST --ca root.crt --cert garage-door.crt --key garage-door.key
"""

from __future__ import annotations

import argparse
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--port", type=int, default=8883)
    parser.add_argument("--ca", required=True, help="the CA's root certificate (PEM)")
    parser.add_argument("--cert", required=True, help="this device's certificate and chain")
    parser.add_argument("--key", required=True, help="this device's private key")
    parser.add_argument("--topic", default="house/garage")
    args = parser.parse_args()

    context = ssl.create_default_context(cafile=args.ca)  # our root only, not the system's
    context.load_cert_chain(args.cert, args.key)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="garage-door")
    client.tls_set_context(context)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        print(f"connected: {reason}", flush=True)
        c.subscribe(f"{args.topic}/cmd", qos=1)
        c.publish(f"{args.topic}/state", b"closed", qos=1, retain=True)

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        command = message.payload.decode("utf-8", "replace")
        print(f"command: {command}", flush=True)
        if command == "open":
            c.publish(f"{args.topic}/state", b"open", qos=1, retain=True)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(args.broker, args.port, keepalive=30)
    client.loop_forever()


if __name__ == "__main__":
    main()
