from longrun.testing import Faults

faults = Faults(
    duplicate="during",  # or "after", or None
    duplicate_request_id="same",  # or "new"
    crash_before_handoff={1},  # hop numbers
    fail_writes={3},  # 1-based checkpoint write numbers
)
