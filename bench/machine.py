"""What the bench scripts say of the machine their figures come from."""

from __future__ import annotations


def cpu_model() -> str:
    """The processor's model name, as /proc/cpuinfo gives it ("unknown" elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
