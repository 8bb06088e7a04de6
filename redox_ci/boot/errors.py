"""Why a boot could not even start: one class per cause, each a sentence for a person.

A boot that starts and then fails is not an exception: it is a ``BootResult`` with
verdict "fail". These are the cases where there is nothing to judge (exit 2), and
the interruption of redox-ci itself, after which the VM has been stopped.
"""

from __future__ import annotations

import signal

from ..errors import RedoxCIError, UsageError


class ImageError(UsageError):
    """The disk image or the bootloader is missing, or no throw-away copy can be made."""


class FirmwareNotFound(UsageError):
    """No UEFI firmware for this VMM and system on this host."""


class VmmNotFound(UsageError):
    """The VMM executable is not installed."""


class VmmUnavailable(UsageError):
    """This host cannot run the VMM asked for (no usable KVM, wrong architecture)."""


class TranscriptError(UsageError):
    """A replay transcript line is not valid JSON of the expected shape."""


class BootInterrupted(RedoxCIError):
    """redox-ci got a signal while a VM was running; the VM was stopped first."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; the VM was stopped")
