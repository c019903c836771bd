"""The runbook catalog: YAML files under ``runbooks/`` validated with pydantic.

A file binds a runbook name to a workflow type, declares its parameters (types, defaults from the platform's
policies), its approval policy (optionally per environment), its triggers (Slack, PagerDuty) and a concurrency
key template that becomes the workflow id, so two runs against one target cannot overlap.

``runbooks/groups.yaml`` names the approver groups: each is a list of people, or a mapping with the identity
provider's groups whose members belong to it (``idp_groups``, matched against the ID token's groups claim) and
named ``people``. It also lists each person's aliases on other channels (``people: {alice: [slack:U0ALICE]}``), so
that every alias of one person is one approver, and which service identities may vouch for which alias namespaces
(``vouchers: {runbook-gateway: [slack]}``). Any error names the file, the line and the field.

Planning a start (``Catalog.plan_start``) is pure: it turns a runbook name, parameters and a requester into the
workflow type, id, input and search attributes. The CLI, the Slack and PagerDuty gateway and schedules all use it
and then start the workflow themselves.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from core.approval import ApprovalPolicy
from core.calendar import BreakGlass, Calendar, Freeze, FreezePolicy, Window, freeze_at, windows_from_ics
from core.duration import Duration, parse_duration
from core.identity import People
from core.routing import DEFAULT_ROUTES, Route, route_problems
from core.runbook import RunbookInput, RunbookMeta

GROUPS_FILE = "groups.yaml"
ROUTING_FILE = "routing.yaml"  # the catalog's routing table (core.routing), replacing the stock one
CALENDAR_FILE = "calendar.yaml"  # the change calendar (core.calendar): freeze windows
NAME_RE = r"^[a-z][a-z0-9-]*$"


class CatalogError(Exception):
    """One or more problems in catalog files, each naming file, line and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ParameterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["string", "integer", "number", "boolean", "duration", "list", "object"] = "string"
    description: str = ""
    required: bool = False
    default: Any = None
    choices: list[Any] | None = None
    secret: bool = Field(False, description="refused: secrets are Vault paths, never parameters")

    @model_validator(mode="after")
    def _check(self) -> "ParameterSpec":
        if self.secret:
            raise ValueError("parameters cannot be secrets: pass a Vault path and read it in the activity")
        if self.required and self.default is not None:
            raise ValueError("a required parameter cannot have a default")
        if self.default is not None:
            self.default = coerce(self, self.default)
        return self


class CatalogApproval(BaseModel):
    """The approval policy as written in the catalog; group names refer to groups.yaml."""

    model_config = ConfigDict(extra="forbid")

    approvers: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    required_approvals: int = Field(1, ge=0)
    required_groups: list[str] = Field(default_factory=list)
    allow_self_approval: bool = False
    allow_ui_approval: bool = True
    allow_unauthenticated_ui_approval: bool = False
    timeout: Duration = timedelta(hours=24)
    on_timeout: Literal["reject", "abort", "escalate"] = "reject"
    escalate_to: list[str] = Field(default_factory=list)
    reminder_interval: Duration | None = timedelta(hours=1)

    def to_policy(self, groups: dict[str, list[str]], idp_groups: dict[str, list[str]] | None = None,
                  people: People | None = None) -> ApprovalPolicy:
        idp_groups = idp_groups or {}
        names = list(dict.fromkeys([*self.groups, *self.required_groups]))
        missing = [n for n in names if n not in groups and n not in idp_groups]
        if missing:
            raise ValueError(f"unknown approver group(s) {', '.join(missing)} (define them in {GROUPS_FILE})")
        data = self.model_dump(exclude={"groups"})
        return ApprovalPolicy(
            **data,
            groups={n: groups.get(n, []) for n in names},
            idp_groups={n: idp_groups[n] for n in names if idp_groups.get(n)},
            people=people or People(),
        )


class SlackTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(default_factory=list, description="channel ids allowed to start it; empty = none")
    users: list[str] = Field(default_factory=list, description="Slack user ids allowed to start it; empty = anyone in the channels")


class _Attrs:
    """Attribute access over a webhook's JSON for trigger templates: ``{incident.service.summary}``."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def __getattr__(self, name: str) -> "_Attrs":
        if isinstance(self._data, dict) and name in self._data:
            return _Attrs(self._data[name])
        raise ParameterError(f"the incident has no field {name!r}")

    def __getitem__(self, key: Any) -> "_Attrs":
        try:
            return _Attrs(self._data[int(key)] if isinstance(self._data, list) else self._data[key])
        except (KeyError, IndexError, ValueError, TypeError):
            raise ParameterError(f"the incident has no field {key!r}") from None

    def __format__(self, spec: str) -> str:
        value = self._data
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        return format(value, spec)


class _AnyField:
    """Stands in for any incident field when a template is checked at load: every path exists."""

    def __getattr__(self, name: str) -> "_AnyField":
        return self

    def __getitem__(self, key: Any) -> "_AnyField":
        return self

    def __format__(self, spec: str) -> str:
        return ""


TEMPLATE_FIELDS = ("incident", "event")
_LITERAL_BRACES = 'write a literal brace doubled: "{{region: us-east-1}}" gives {region: us-east-1}'


def _render_template(template: str, scope: dict[str, Any]) -> str:
    try:
        return string.Formatter().vformat(template, (), scope)
    except ParameterError:
        raise
    except KeyError as err:
        raise ParameterError(f"{{{err.args[0]}}} is not a field: a template names {{incident.<path>}} or "
                             f"{{event.<path>}}; {_LITERAL_BRACES}") from None
    except IndexError:
        raise ParameterError(f"a positional field {{}} or {{0}} is not a field: a template names {{incident.<path>}} "
                             f"or {{event.<path>}}; {_LITERAL_BRACES}") from None
    except (ValueError, AttributeError, TypeError) as err:
        raise ParameterError(f"not a valid template ({err}); {_LITERAL_BRACES}") from None


def render_trigger_parameters(templates: dict[str, str], event: dict) -> dict[str, str]:
    """A PagerDuty trigger's parameters rendered over the webhook's event (``{incident...}`` is its ``data``).
    Raises ParameterError naming the parameter, never anything else."""
    scope = {"incident": _Attrs(event.get("data") or {}), "event": _Attrs(event)}
    out = {}
    for name, template in templates.items():
        try:
            out[name] = _render_template(template, scope)
        except ParameterError as err:
            raise ParameterError(f"trigger parameter {name!r} ({template!r}): {err}") from None
    return out


class PagerDutyTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_ids: list[str] = Field(min_length=1)
    event_types: list[str] = Field(default_factory=lambda: ["incident.triggered"])
    priorities: list[str] = Field(default_factory=list, description="e.g. P1, P2; empty = any priority")
    auto_approve: bool = False
    parameters: dict[str, str] = Field(
        default_factory=dict, description="parameter templates over the incident, e.g. '{incident.title}'"
    )

    @field_validator("parameters")
    @classmethod
    def _templates(cls, parameters: dict[str, str]) -> dict[str, str]:
        """Every template renders against any incident: fields are {incident...} or {event...}, braces doubled."""
        scope = {name: _AnyField() for name in TEMPLATE_FIELDS}
        for name, template in parameters.items():
            try:
                _render_template(template, scope)
            except ParameterError as err:
                raise ValueError(f"{name}: {template!r}: {err}") from None
        return parameters


class Triggers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slack: SlackTrigger | None = None
    pagerduty: list[PagerDutyTrigger] = Field(default_factory=list)


class RunbookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_RE)
    description: str
    workflow: str = Field(description="the workflow type name")
    target: str = Field(description="template over the parameters, e.g. '{service}'")
    environment: str = Field("", description="template over the parameters, e.g. '{environment}'")
    concurrency_key: str = Field(description="template over the parameters; becomes the workflow id")
    excludes: list[str] = Field(
        default_factory=list,
        description="templates over the parameters: other runbooks' concurrency keys (their runs' workflow ids) that "
        "must not be running when this one starts (single flight across runbooks, e.g. a canary and a release of the "
        "same service); a start while one runs is refused as 'already running'",
    )
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    approval: CatalogApproval = Field(default_factory=CatalogApproval)
    approval_by_environment: dict[str, CatalogApproval] = Field(default_factory=dict)
    triggers: Triggers = Field(default_factory=Triggers)
    routing: list[Route] = Field(
        default_factory=list, description="routes of this runbook's events, before the catalog's table (core.routing)"
    )
    freeze: FreezePolicy = Field(
        "wait", description="inside a change freeze (calendar.yaml): wait for the window to end, or refuse the run"
    )

    @field_validator("target", "environment", "concurrency_key")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            list(string.Formatter().parse(value))
        except ValueError as err:
            raise ValueError(f"not a valid template: {err}") from None
        return value

    @field_validator("excludes")
    @classmethod
    def _exclude_templates(cls, value: list[str]) -> list[str]:
        for index, template in enumerate(value):
            try:
                list(string.Formatter().parse(template))
            except ValueError as err:
                raise ValueError(f"{index}: not a valid template: {err}") from None
        return value

    @model_validator(mode="after")
    def _templates_use_parameters(self) -> "RunbookSpec":
        templates = [(attr, getattr(self, attr)) for attr in ("target", "environment", "concurrency_key")]
        templates += [(f"excludes.{index}", template) for index, template in enumerate(self.excludes)]
        for attr, template in templates:
            for _, name, _, _ in string.Formatter().parse(template):
                if name is not None and name not in self.parameters:
                    raise ValueError(f"{attr} uses {{{name}}}, which is not a parameter")
        for index, trigger in enumerate(self.triggers.pagerduty):
            for name in trigger.parameters:
                if name not in self.parameters:
                    known = ", ".join(sorted(self.parameters)) or "none"
                    raise ValueError(f"triggers.pagerduty.{index}.parameters.{name}: not a parameter of this runbook "
                                     f"(parameters: {known})")
            missing = [name for name, p in self.parameters.items()
                       if p.required and p.default is None and name not in trigger.parameters]
            if missing:
                raise ValueError(f"triggers.pagerduty.{index}.parameters: the runbook requires "
                                 f"{', '.join(map(repr, missing))}, which this trigger does not set: it could never start")
        return self

    def policy_for(self, environment: str, groups: dict[str, list[str]], idp_groups: dict[str, list[str]] | None = None,
                   people: People | None = None) -> ApprovalPolicy:
        return self.approval_by_environment.get(environment, self.approval).to_policy(groups, idp_groups, people)


@dataclass
class StartPlan:
    """Everything needed to start a runbook, decided before anything is started."""

    runbook: str
    workflow_type: str
    workflow_id: str
    input: BaseModel
    meta: RunbookMeta
    params: dict[str, Any] = field(default_factory=dict)
    excludes: list[str] = field(default_factory=list)  # workflow ids that must not be running when this one starts


def coerce(spec: ParameterSpec, value: Any) -> Any:
    """Turn a parameter value (often a string from --set or Slack) into the declared type."""
    kind = spec.type
    if isinstance(value, str) and kind in ("list", "object"):
        try:
            value = yaml.safe_load(value) if value.strip() else ([] if kind == "list" else {})
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or "cannot be read"
            raise ValueError(f"is not valid YAML ({problem}); write it like '[a, b]' or '{{key: value}}'") from None
    if kind == "string":
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError("must be a string")
        value = str(value)
    elif kind == "integer":
        if isinstance(value, bool) or not re.fullmatch(r"-?\d+", str(value).strip()):
            raise ValueError(f"must be an integer, not {value!r}")
        value = int(str(value).strip())
    elif kind == "number":
        try:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number, not {value!r}") from None
    elif kind == "boolean":
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise ValueError(f"must be true or false, not {value!r}")
            value = lowered in ("true", "yes", "1", "on")
        elif not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
    elif kind == "duration":
        parse_duration(value)  # validates; keep the operator's spelling
    elif kind == "list" and not isinstance(value, list):
        raise ValueError("must be a list")
    elif kind == "object" and not isinstance(value, dict):
        raise ValueError("must be a mapping")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"must be one of {', '.join(map(str, spec.choices))}")
    return value


class ParameterError(ValueError):
    """A parameter problem a person can fix; the message names the parameter."""


class Catalog:
    def __init__(self, runbooks: dict[str, RunbookSpec], groups: dict[str, list[str]], files: dict[str, Path],
                 idp_groups: dict[str, list[str]] | None = None, people: People | None = None,
                 routing: list[Route] | None = None, calendar: Calendar | None = None,
                 break_glass: dict[str, ApprovalPolicy] | None = None):
        self.runbooks = runbooks
        self.calendar = calendar or Calendar()  # the change calendar (calendar.yaml); empty: nothing is frozen
        self.break_glass = break_glass or {}  # window name -> its resolved break-glass policy
        self.routing = list(DEFAULT_ROUTES) if routing is None else routing  # the catalog-level routing table
        self.groups = groups  # approver group -> named people
        self.idp_groups = idp_groups or {}  # approver group -> identity-provider groups
        self.people = people or People()
        self.files = files

    @classmethod
    def load(cls, directory: Path | str, *, inputs: Mapping[str, type[RunbookInput]] | None = None) -> "Catalog":
        """Load and validate every runbook file; raise CatalogError listing every problem found. With ``inputs``
        (workflow type name -> its input model, ``workflows.registry.inputs()``), each file's workflow type and
        parameters are checked against the input model."""
        directory = Path(directory)
        problems: list[str] = []
        groups: dict[str, list[str]] = {}
        idp_groups: dict[str, list[str]] = {}
        people = People()
        groups_path = directory / GROUPS_FILE
        if groups_path.exists():
            data, lines = _read_yaml(groups_path, problems)
            if data is not None:
                try:
                    parsed = _GroupsFile.model_validate(data)
                except ValidationError as err:
                    problems += _explain(groups_path, err, lines)
                else:
                    groups, idp_groups, people = parsed.resolved()
        routing = _load_routing(directory / ROUTING_FILE, problems)
        runbooks: dict[str, RunbookSpec] = {}
        files: dict[str, Path] = {}
        if not directory.is_dir():
            raise CatalogError([f"{directory}: catalog folder not found"])
        for path in sorted(directory.glob("*.y*ml")):
            if path.name in (GROUPS_FILE, ROUTING_FILE, CALENDAR_FILE):
                continue
            spec = _load_spec(path, groups, problems, inputs, idp_groups, people)
            if spec is None:
                continue
            if spec.name in runbooks:
                problems.append(f"{path}:1: name: {spec.name!r} is already defined in {files[spec.name]}")
                continue
            runbooks[spec.name] = spec
            files[spec.name] = path
        calendar, break_glass = _load_calendar(directory / CALENDAR_FILE, problems, set(runbooks), groups, idp_groups,
                                               people)
        if problems:
            raise CatalogError(problems)
        return cls(runbooks, groups, files, idp_groups, people, routing, calendar, break_glass)

    def freeze(self, runbook: str, environment: str, at: datetime, kind: str = "") -> Freeze | None:
        """The change freeze in force for ``runbook`` (of ``kind``) in ``environment`` at ``at``, or None."""
        return freeze_at(self.calendar, runbook, environment, at, kind, self.break_glass)

    def get(self, name: str) -> RunbookSpec:
        try:
            return self.runbooks[name]
        except KeyError:
            known = ", ".join(sorted(self.runbooks)) or "none"
            raise ParameterError(f"unknown runbook {name!r} (known: {known})") from None

    def plan_start(
        self,
        name: str,
        params: dict[str, Any],
        *,
        requested_by: str,
        inputs: Mapping[str, type[RunbookInput]],
        source: str = "cli",
        incident_id: str | None = None,
        slack_channel: str | None = None,
        ui_base: str | None = None,
        namespace: str = "default",
        workflow_id: str | None = None,
        approval: ApprovalPolicy | None = None,
    ) -> StartPlan:
        spec = self.get(name)
        if not requested_by:
            raise ParameterError("the requester's identity is missing (use --as USER)")
        values: dict[str, Any] = {}
        for key in params:
            if key not in spec.parameters:
                known = ", ".join(sorted(spec.parameters)) or "none"
                raise ParameterError(f"{name}: unknown parameter {key!r} (parameters: {known})")
        for key, pspec in spec.parameters.items():
            if key in params and params[key] is not None:
                try:
                    values[key] = coerce(pspec, params[key])
                except ValueError as err:
                    raise ParameterError(f"{name}: parameter {key!r} {err}") from None
            elif pspec.default is not None:
                values[key] = pspec.default
            elif pspec.required:
                raise ParameterError(f"{name}: missing required parameter {key!r} ({pspec.description or pspec.type})")
        model = inputs.get(spec.workflow)
        if model is None:
            raise ParameterError(f"{name}: workflow type {spec.workflow!r} is not registered with this worker build")
        text_values = {k: _template_text(v) for k, v in values.items()}
        target = spec.target.format_map(_Missing(text_values))
        environment = spec.environment.format_map(_Missing(text_values))
        wf_id = workflow_id or spec.concurrency_key.format_map(_Missing(text_values))
        check_identifiers(name, wf_id, {"target": target, "environment": environment, "requested_by": requested_by})
        policy = approval or spec.policy_for(environment, self.groups, self.idp_groups, self.people)
        ui_url = f"{ui_base.rstrip('/')}/namespaces/{namespace}/workflows/{wf_id}" if ui_base else None
        meta = RunbookMeta(
            runbook=name,
            target=target,
            environment=environment,
            requested_by=requested_by,
            approval=policy,
            approval_by_environment={
                env: entry.to_policy(self.groups, self.idp_groups, self.people)
                for env, entry in spec.approval_by_environment.items()
            },
            incident_id=incident_id,
            slack_channel=slack_channel,
            ui_url=ui_url,
            source=source,
            routing=[*spec.routing, *self.routing],
            freeze=spec.freeze,
        )
        try:
            workflow_input = model.model_validate({**values, "meta": meta})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            if not where:  # a rule across several parameters
                raise ParameterError(f"{name}: {message}") from None
            raise ParameterError(f"{name}: parameter {where!r}: {message}") from None
        problems = workflow_input.problems()
        if problems:
            raise ParameterError(f"{name}: " + "; ".join(problems))
        excludes = [key.format_map(_Missing(text_values)) for key in spec.excludes]
        return StartPlan(name, spec.workflow, wf_id, workflow_input, meta, values,
                         excludes=[key for key in excludes if key != wf_id])


# Temporal's default limits (server dynamic config limit.maxIDLength, limit.searchAttributeSizeOfValue): a start
# that would break them is refused here, before anything starts, instead of failing at the server or mid-run.
MAX_ID_BYTES = 1000
MAX_SEARCH_ATTRIBUTE_BYTES = 2048


def check_identifiers(runbook: str, workflow_id: str, attributes: dict[str, str]) -> None:
    """Refuse identifiers derived from parameters that are blank or exceed Temporal's limits."""
    if not workflow_id.strip() or workflow_id != workflow_id.strip():
        raise ParameterError(f"{runbook}: the workflow id {workflow_id!r} (from the concurrency key) is blank or has "
                             "surrounding spaces: check the parameters it is made of")
    if len(workflow_id.encode()) > MAX_ID_BYTES:
        raise ParameterError(f"{runbook}: the workflow id is {len(workflow_id.encode())} bytes, over Temporal's limit of "
                             f"{MAX_ID_BYTES}: shorten the parameters in the concurrency key")
    if not attributes.get("target", "").strip():
        raise ParameterError(f"{runbook}: the run's target is blank: check the parameters it is made of")
    for name, value in attributes.items():
        if len(value.encode()) > MAX_SEARCH_ATTRIBUTE_BYTES:
            raise ParameterError(f"{runbook}: the {name} is {len(value.encode())} bytes, over Temporal's search-attribute "
                                 f"limit of {MAX_SEARCH_ATTRIBUTE_BYTES}")


ALIAS_RE = r"^[a-z][a-z0-9_-]*:\S+$"
Alias = Annotated[str, StringConstraints(pattern=ALIAS_RE)]  # namespace:id, e.g. slack:U0ALICE


class _GroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    idp_groups: list[str] = Field(default_factory=list, description="identity-provider groups (the token's groups claim)")
    people: list[str] = Field(default_factory=list, description="named people (or their aliases)")


class _GroupsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    groups: dict[str, list[str] | _GroupSpec]
    people: dict[str, list[Alias]] = Field(default_factory=dict, description="person -> aliases (namespace:id)")
    vouchers: dict[str, list[str]] = Field(
        default_factory=dict, description="service identity -> alias namespaces it may vouch for"
    )

    @field_validator("people")
    @classmethod
    def _aliases(cls, people: dict[str, list[str]]) -> dict[str, list[str]]:
        owner: dict[str, str] = {}
        for person, aliases in people.items():
            for alias in aliases:
                if alias in owner and owner[alias] != person:
                    raise ValueError(f"{person}: alias {alias!r} already belongs to {owner[alias]}")
                owner[alias] = person
        return people

    @model_validator(mode="after")
    def _services_are_not_people(self) -> "_GroupsFile":
        both = sorted(set(self.vouchers) & set(self.people))
        if both:
            raise ValueError(f"vouchers: {', '.join(both)} cannot be both a service identity and a person")
        return self

    def resolved(self) -> tuple[dict[str, list[str]], dict[str, list[str]], People]:
        named = {g: (v if isinstance(v, list) else v.people) for g, v in self.groups.items()}
        idp = {g: v.idp_groups for g, v in self.groups.items() if isinstance(v, _GroupSpec) and v.idp_groups}
        return named, idp, People(aliases=self.people, vouchers=self.vouchers)


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        raise ParameterError(f"template needs parameter {key!r}, which has no value")


def _template_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _load_spec(
    path: Path, groups: dict[str, list[str]], problems: list[str], inputs: Mapping[str, type[RunbookInput]] | None,
    idp_groups: dict[str, list[str]] | None = None, people: People | None = None,
) -> RunbookSpec | None:
    data, lines = _read_yaml(path, problems)
    if data is None:
        return None
    try:
        spec = RunbookSpec.model_validate(data)
    except ValidationError as err:
        problems += _explain(path, err, lines)
        return None
    for env_name, approval in [("approval", spec.approval), *[
        (f"approval_by_environment.{k}", v) for k, v in spec.approval_by_environment.items()
    ]]:
        try:
            approval.to_policy(groups, idp_groups, people)
        except (ValueError, ValidationError) as err:
            loc = tuple(env_name.split("."))
            message = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            problems.append(f"{path}:{_line_for(lines, loc)}: {env_name}: {message}")
    for index, message in route_problems(spec.routing, complete=False):
        problems.append(f"{path}:{_line_for(lines, ('routing', index or 0))}: routing.{index}: {message}")
    if inputs is not None:
        _check_against_workflow(path, spec, lines, inputs, problems)
    return spec


class _RoutingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    routes: list[Route] = Field(min_length=1, description="first match wins (core.routing)")


def _load_routing(path: Path, problems: list[str]) -> list[Route] | None:
    """The catalog's routing table (routing.yaml), or None for the stock one when there is no such file. It must
    route every kind of event at every severity, and each route must be able to match."""
    if not path.exists():
        return None
    data, lines = _read_yaml(path, problems)
    if data is None:
        return None
    try:
        routes = _RoutingFile.model_validate(data).routes
    except ValidationError as err:
        problems += _explain(path, err, lines)
        return None
    for index, message in route_problems(routes, complete=True):
        where = ("routes", index) if index is not None else ("routes",)
        name = f"routes.{index}" if index is not None else "routes"
        problems.append(f"{path}:{_line_for(lines, where)}: {name}: {message}")
    return routes


def _load_calendar(
    path: Path, problems: list[str], runbooks: set[str], groups: dict[str, list[str]],
    idp_groups: dict[str, list[str]], people: People,
) -> tuple[Calendar | None, dict[str, ApprovalPolicy]]:
    """The change calendar (calendar.yaml), or None when there is none; with each window's break-glass policy.
    Refused, naming file, line and field: an unknown time zone, an RRULE that cannot be parsed, an inverted or
    overlapping window, an unknown runbook or approver group."""
    if not path.exists():
        return None, {}
    data, lines = _read_yaml(path, problems)
    if data is None:
        return None, {}
    try:
        calendar = Calendar.model_validate(data)
    except ValidationError as err:
        for problem in err.errors():
            message = problem["msg"].removeprefix("Value error, ")
            loc = tuple(problem["loc"])
            named = message.split(": ", 1)
            if not loc and len(named) == 2 and named[0].startswith("windows."):  # a rule across windows
                loc = tuple(int(p) if p.isdigit() else p for p in named[0].split("."))
                message = named[1]
            if loc and loc[-1] == "start" and "end:" in message:  # the window's own span rule names its end
                loc, message = (*loc[:-1], "end"), message.split(": ", 1)[1]
            elif len(loc) >= 2 and loc[0] == "windows" and message.startswith("end: "):
                loc, message = (*loc, "end"), message.removeprefix("end: ")
            where = ".".join(str(p) for p in loc) or "(file)"
            problems.append(f"{path}:{_line_for(lines, loc)}: {where}: {message}")
        return None, {}
    imported: list[Window] = []
    for index, source in enumerate(calendar.imports):
        ics = path.parent / source.file
        try:
            imported += windows_from_ics(ics.read_text(encoding="utf-8"), source)
        except OSError as err:
            problems.append(f"{path}:{_line_for(lines, ('imports', index, 'file'))}: imports.{index}.file: cannot read "
                            f"{source.file}: {err.strerror}")
        except ValueError as err:
            problems.append(f"{ics}:{err}")
    if imported:
        taken = {w.name for w in calendar.windows}
        clash = sorted(w.name for w in imported if w.name in taken)
        if clash:
            problems.append(f"{path}:{_line_for(lines, ('imports',))}: imports: window(s) {', '.join(clash)} also named "
                            "in windows")
        calendar = calendar.model_copy(update={"windows": [*calendar.windows, *imported]})
    for (index, field_name), message in calendar.problems():
        problems.append(f"{path}:{_line_for(lines, ('windows', index, field_name))}: {message}")
    policies: dict[str, ApprovalPolicy] = {}
    for index, window in enumerate(calendar.windows):
        for key in ("runbooks", "exempt"):
            for n, name in enumerate(getattr(window, key)):
                if name.split(":", 1)[0] not in runbooks:
                    known = ", ".join(sorted(runbooks)) or "none"
                    problems.append(f"{path}:{_line_for(lines, ('windows', index, key, n))}: windows.{index}.{key}.{n}: "
                                    f"unknown runbook {name!r} (known: {known})")
        glass: BreakGlass | None = window.break_glass or calendar.break_glass
        if glass is None:
            continue
        at: tuple = ("windows", index, "break_glass") if window.break_glass else ("break_glass",)
        approval = CatalogApproval(groups=glass.groups, required_approvals=glass.required_approvals,
                                   allow_self_approval=glass.allow_self_approval, timeout=glass.timeout,
                                   reminder_interval=None)
        try:
            policies[window.name] = approval.to_policy(groups, idp_groups, people).model_copy(
                update={"require_reason": True})
        except (ValueError, ValidationError) as err:
            message = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            problems.append(f"{path}:{_line_for(lines, at)}: {'.'.join(map(str, at))}: {message}")
    return calendar, policies


def _check_against_workflow(
    path: Path, spec: RunbookSpec, lines: dict, inputs: Mapping[str, type[RunbookInput]], problems: list[str]
) -> None:
    model = inputs.get(spec.workflow)
    if model is None:
        known = ", ".join(sorted(inputs)) or "none"
        problems.append(f"{path}:{_line_for(lines, ('workflow',))}: workflow: unknown workflow type {spec.workflow!r} (known: {known})")
        return
    fields = model.model_fields
    for pname in spec.parameters:
        if pname not in fields:
            problems.append(
                f"{path}:{_line_for(lines, ('parameters', pname))}: parameters.{pname}: "
                f"not an input of workflow {spec.workflow}"
            )
    for fname, finfo in fields.items():
        if fname != "meta" and finfo.is_required() and fname not in spec.parameters:
            problems.append(
                f"{path}:{_line_for(lines, ('parameters',))}: parameters: workflow {spec.workflow} requires {fname!r}"
            )


def _read_yaml(path: Path, problems: list[str]) -> tuple[Any, dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        problems.append(f"{path}: cannot read: {err.strerror}")
        return None, {}
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problems.append(f"{path}:{line}: invalid YAML: {getattr(err, 'problem', err)}")
        return None, {}
    if not isinstance(data, dict):
        problems.append(f"{path}:1: the file must hold a mapping")
        return None, {}
    lines: dict[tuple, int] = {}
    _record_lines(node, (), lines)
    return data, lines


def _record_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            lines[child] = key.start_mark.line + 1
            _record_lines(value, child, lines)
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, path + (index,), lines)


def _line_for(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple(str(p) if not isinstance(p, int) else p for p in loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get((), 1)


def _explain(path: Path, err: ValidationError, lines: dict) -> list[str]:
    out = []
    for problem in err.errors():
        loc = tuple(problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        named = message.split(" ", 1)[0]
        if loc == () and (named,) in lines:  # a model-level rule whose message starts with the field it is about
            loc = (named,)
            message = message.split(" ", 1)[1]
        where = ".".join(str(p) for p in loc) or "(file)"
        out.append(f"{path}:{_line_for(lines, loc)}: {where}: {message}")
    return out
