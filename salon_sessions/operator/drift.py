"""Drift of a session's StatefulSet: what someone else changed, and how it is put back.

A StatefulSet's `metadata.generation` grows with every change of its spec, and only then.
The operator remembers the generation its own last write produced (`Session.
statefulset_generation`); a watched StatefulSet with a higher generation was changed by
someone else — replicas, the hash, the owner, or anything in the pod template (an env var
added with `kubectl edit`). That is exact and cheap: no comparison with the API server's
defaults, and no patch unless someone really wrote.

Putting it back: the server-side apply restores the fields we set, but never removes what
another field manager added (an env var, a field of the pod spec). So the pod template is
then replaced as a whole (`Kube.replace_pod_template`, a JSON patch), keeping only
`kubectl.kubernetes.io/restartedAt` (a `kubectl rollout restart` is a legitimate way to
restart the worker; dropping it would roll the pod a second time). Spec fields outside the
template that we do not set (e.g. `minReadySeconds`) are left alone.

After an operator restart the generation is not known yet: the first StatefulSet seen is
compared by content instead (`template_matches`: every field we set has our value, and no
list of ours — containers, env, volumes, ports — has more items); a hand-added scalar field
elsewhere in the template is only caught by the next foreign change.
"""

from __future__ import annotations

from typing import Any, Final

RESTARTED_AT: Final = "kubectl.kubernetes.io/restartedAt"


def template_matches(desired: Any, existing: Any) -> bool:
    """Every field of `desired` has the same value in `existing` (which may hold the API
    server's defaults besides), and lists have exactly as many items."""
    if isinstance(desired, dict):
        return isinstance(existing, dict) and all(
            k in existing and template_matches(v, existing[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(existing, list) and len(desired) == len(existing)
                and all(template_matches(d, e) for d, e in zip(desired, existing,
                                                               strict=True)))
    return bool(desired == existing)


def generation(body: dict[str, Any] | None) -> int | None:
    value = ((body or {}).get("metadata") or {}).get("generation")
    return value if isinstance(value, int) else None


def restored_template(desired: dict[str, Any], existing: dict[str, Any] | None
                      ) -> dict[str, Any]:
    """The pod template to put back: ours, with a `kubectl rollout restart` kept."""
    template: dict[str, Any] = {**desired["spec"]["template"]}
    old = (((existing or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}
    restarted = (old.get("annotations") or {}).get(RESTARTED_AT)
    if restarted:
        meta = dict(template.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), RESTARTED_AT: restarted}
        template["metadata"] = meta
    return template
