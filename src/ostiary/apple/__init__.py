"""Apple configuration profiles (``.mobileconfig``): the wire format phones enroll with."""

from ostiary.apple.profile import (
    MOBILECONFIG_MEDIA_TYPE,
    AcmePayload,
    PhoneProfileSpec,
    ScepPayload,
    build_profile,
    sign_profile,
)

__all__ = [
    "MOBILECONFIG_MEDIA_TYPE",
    "AcmePayload",
    "PhoneProfileSpec",
    "ScepPayload",
    "build_profile",
    "sign_profile",
]
