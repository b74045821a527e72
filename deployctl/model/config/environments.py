"""The ``environments:`` section of deployctl.yaml: namespaces, contexts, gates, approvers and freezes."""

from __future__ import annotations

from typing import Any

from deployctl.model.config.fields import ENV_KEYS
from deployctl.model.config.freeze import read_freeze
from deployctl.model.config.strict_yaml import Reader, Who, node_line
from deployctl.model.config.values import (
    APPROVER,
    FORGE,
    EnvironmentConfig,
    FreezeWindow,
    RecurringFreeze,
    dns_label_problem,
    find_cycle,
    show,
)
from deployctl.model.verification import OnFailure


def read_environments(
    reader: Reader, entry: tuple[Any, Any] | None, root: Any, lines: dict[str, int]
) -> tuple[dict[str, EnvironmentConfig], set[str]]:
    if entry is None:
        reader.error(root, "missing 'environments:'; list the environments this repo deploys to")
        return {}, set()
    entries = reader.mapping(entry[1], "environments", None)
    if entries is None:
        return {}, set()
    envs: dict[str, EnvironmentConfig] = {}
    invalid: set[str] = set()
    requires_nodes: dict[str, list[tuple[str, Any]]] = {}
    for name, (key_node, node) in entries.items():
        lines[f"environments.{name}"] = node_line(key_node) or 0
        before = len(reader.problems)
        why = dns_label_problem(name)
        if why is not None:
            reader.error(
                key_node, f"environment name {show(name)} {why} (it must be a Kubernetes DNS-1123 label)"
            )
            invalid.add(name)
            continue
        parsed = _environment(reader, name, node)
        if parsed is None or len(reader.problems) > before:
            invalid.add(name)
            continue
        envs[name] = parsed[0]
        requires_nodes[name] = parsed[1]
    for name, reqs in requires_nodes.items():
        for req, req_node in reqs:
            if req == name:
                reader.error(req_node, f"environment {show(name)} requires itself; remove it", env=name)
                invalid.add(name)
            elif req not in entries:
                reader.error(
                    req_node,
                    f"environments.{name}.requires names unknown environment {show(req)}; "
                    "add it under environments or remove it",
                    env=name,
                )
                invalid.add(name)
    graph = {name: env.requires for name, env in envs.items()}
    cycle = find_cycle(graph)
    while cycle is not None:
        first = cycle[0]
        node = next(n for r, n in requires_nodes[first] if r == cycle[1])
        reader.error(
            node, f"requires cycle: {' -> '.join(cycle)}; remove one of these requirements", env=first
        )
        invalid.update(cycle)
        for member in cycle:
            graph.pop(member, None)
        cycle = find_cycle(graph)
    return {k: v for k, v in envs.items() if k not in invalid}, invalid


def _environment(
    reader: Reader, name: str, node: Any
) -> tuple[EnvironmentConfig, list[tuple[str, Any]]] | None:
    kp = f"environments.{name}"
    who: Who = {"env": name}
    fields = reader.mapping(node, kp, ENV_KEYS, **who)
    if fields is None:
        return None
    if "namespace" not in fields:
        reader.error(node, f"{kp}.namespace is missing; give the Kubernetes namespace to deploy into", **who)
        return None
    namespace = reader.string(fields["namespace"][1], f"{kp}.namespace", required=True, **who)
    if namespace is None:
        return None
    why = dns_label_problem(namespace)
    if why is not None:
        reader.error(
            fields["namespace"][1],
            f"{kp}.namespace {show(namespace)} {why} (it must be a DNS-1123 label)",
            **who,
        )
    context = None
    if "context" in fields:
        context = reader.string(fields["context"][1], f"{kp}.context", **who)
    requires: list[tuple[str, Any]] = []
    if "requires" in fields:
        requires = reader.string_list(fields["requires"][1], f"{kp}.requires", **who) or []
    approvers: list[str] = []
    if "approvers" in fields:
        for approver, approver_node in (
            reader.string_list(fields["approvers"][1], f"{kp}.approvers", **who) or []
        ):
            if APPROVER.fullmatch(approver) is None:
                reader.error(
                    approver_node,
                    f"{kp}.approvers entry {show(approver)} is not @user, @org/team or an email address",
                    **who,
                )
            approvers.append(approver)
    require_approval = False
    approval_by = "signature"
    if "require_approval" in fields:
        value_node = fields["require_approval"][1]
        if getattr(value_node, "tag", "").endswith(":str") and str(value_node.value) == FORGE:
            require_approval, approval_by = True, FORGE
        elif getattr(value_node, "tag", "").endswith(":str"):
            reader.error(value_node, f"{kp}.require_approval must be true, false or forge "
                                     "(approving pull-request reviews)", **who)
        else:
            require_approval = bool(reader.boolean(value_node, f"{kp}.require_approval", **who))
        if require_approval and not approvers:
            reader.error(
                fields["require_approval"][1],
                f"{kp}.require_approval is true but approvers is empty; add approvers",
                **who,
            )
    min_approvals = 1
    if "min_approvals" in fields:
        count_node = fields["min_approvals"][1]
        if getattr(count_node, "tag", "").endswith(":int") and str(count_node.value).isdigit() \
                and 1 <= int(count_node.value) <= 100:
            min_approvals = int(count_node.value)
        else:
            reader.error(count_node, f"{kp}.min_approvals must be a whole number from 1 to 100", **who)
    freeze: list[FreezeWindow | RecurringFreeze] = []
    if "freeze" in fields:
        freeze = read_freeze(reader, fields["freeze"][1], kp, name)
    require_verified = False
    if "require_verified" in fields:
        require_verified = bool(
            reader.boolean(fields["require_verified"][1], f"{kp}.require_verified", **who)
        )
        if require_verified and not requires:
            reader.error(fields["require_verified"][1], f"{kp}.require_verified is true but requires is empty; "
                         "name the environments whose verification counts, e.g. requires: [staging]", **who)
    on_failure = OnFailure.NOTIFY
    if "on_verification_failure" in fields:
        text = reader.string(fields["on_verification_failure"][1], f"{kp}.on_verification_failure",
                             required=True, **who)
        if text is not None:
            try:
                on_failure = OnFailure(text)
            except ValueError:
                reader.error(fields["on_verification_failure"][1], f"{kp}.on_verification_failure {show(text)} "
                             f"must be one of {', '.join(OnFailure)}", **who)
    env = EnvironmentConfig(
        name=name,
        namespace=namespace,
        context=context,
        requires=tuple(dict.fromkeys(r for r, _ in requires)),
        approvers=tuple(approvers),
        require_approval=require_approval,
        freeze=tuple(freeze),
        require_verified=require_verified,
        on_verification_failure=on_failure,
        approval_by=approval_by,
        min_approvals=min_approvals,
    )
    return env, requires
