"""Names of the typed failures the product raises.

Activities raise ``ApplicationError(message, type=<one of these>)``; retry policies name the non-retryable ones.
Keeping the names here (plain strings, no SDK import) lets workflows, activities and tests agree on them.
"""

# Input or configuration a person must fix: retrying cannot help.
INVALID_INPUT = "InvalidInput"
# The outside object the step needs does not exist (target group, deployment, snapshot, zone, ...).
NOT_FOUND = "NotFound"
# The outside system refused us (credentials, permissions).
ACCESS_DENIED = "AccessDenied"
# A write was made but reading it back shows something else.
VERIFICATION_FAILED = "VerificationFailed"
# A wait ran past its deadline (rollout progress, instance available, replica lag).
DEADLINE_EXCEEDED = "DeadlineExceeded"
# A transient failure: network, throttling, a lock held by someone else. Retried.
TRANSIENT = "Transient"

# The one workflow-level failure: the run could not make the infrastructure safe (or a drill proved it unsafe).
# Every other ending is a result (core.runbook.RunStatus); the failure's details[0] is the result all the same.
RUN_FAILED = "RunFailed"

NON_RETRYABLE = [INVALID_INPUT, NOT_FOUND, ACCESS_DENIED, VERIFICATION_FAILED, DEADLINE_EXCEEDED]
