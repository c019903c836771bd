"""The custom search attributes every runbook keeps up to date, so the web UI's list filters on them.

They must be registered on the server (`temporal server start-dev --search-attribute Name=Keyword`, or
`temporal operator search-attribute create` on a cluster); ``REGISTRATION`` lists them for that.
"""

from temporalio.common import SearchAttributeKey

RUNBOOK_NAME = SearchAttributeKey.for_keyword("RunbookName")
RUNBOOK_TARGET = SearchAttributeKey.for_keyword("RunbookTarget")
RUNBOOK_ENVIRONMENT = SearchAttributeKey.for_keyword("RunbookEnvironment")
RUNBOOK_REQUESTED_BY = SearchAttributeKey.for_keyword("RunbookRequestedBy")
RUNBOOK_STATUS = SearchAttributeKey.for_keyword("RunbookStatus")

ALL = [RUNBOOK_NAME, RUNBOOK_TARGET, RUNBOOK_ENVIRONMENT, RUNBOOK_REQUESTED_BY, RUNBOOK_STATUS]
REGISTRATION = [f"{key.name}=Keyword" for key in ALL]
