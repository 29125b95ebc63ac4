"""A renderer for the small subset of kustomize that `deploy/k8s/` uses, so the manifests can be
rendered and validated without a kustomize binary (`kubectl kustomize` is compared with it when
present).

Supported: `resources` (files and directories), `namespace`, `labels` (metadata labels only:
`includeSelectors`/`includeTemplates` are refused), `images` (`newName`, `newTag`, `digest`),
and `patches`: a strategic-merge patch from `path` (matched by kind and name; lists of objects
with a `name` merge by name, other lists are replaced, `null` deletes), or a JSON 6902 patch
(`patch` or `path` + `target`, ops add/replace/remove; the target's `name` is a regular
expression matching the whole name, as in kustomize). Anything else in a kustomization is an
error, so the manifests cannot drift into features this renderer would silently get wrong.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pathlib import Path

Obj = dict[str, Any]

_ALLOWED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}


class UnsupportedError(ValueError):
    pass


def render(directory: Path) -> list[Obj]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _ALLOWED
    if unknown:
        raise UnsupportedError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    objects = _resources(directory, kustomization.get("resources", []))
    for patch in kustomization.get("patches", []):
        _apply_patch(directory, objects, patch)
    if "namespace" in kustomization:
        _set_namespace(objects, kustomization["namespace"])
    for label_set in kustomization.get("labels", []):
        if label_set.get("includeSelectors") or label_set.get("includeTemplates"):
            raise UnsupportedError("labels: only metadata labels are supported")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    for image in kustomization.get("images", []):
        for obj in objects:
            _set_images(obj, image)
    return objects


def _set_namespace(objects: list[Obj], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] not in _CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace


def _resources(directory: Path, resources: list[str]) -> list[Obj]:
    objects: list[Obj] = []
    for resource in resources:
        path = (directory / resource).resolve()
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def _apply_patch(directory: Path, objects: list[Obj], patch: Obj) -> None:
    if "path" in patch:
        body = yaml.safe_load((directory / patch["path"]).read_text())
    else:
        body = yaml.safe_load(patch["patch"])
    target = patch.get("target")
    if isinstance(body, list):
        if target is None:
            raise UnsupportedError("a JSON 6902 patch needs a target")
        matched = [obj for obj in objects if _matches(obj, target)]
        if not matched:
            raise UnsupportedError(f"patch target {target} matches nothing")
        for obj in matched:
            for operation in body:
                _json6902(obj, operation)
        return
    if target is not None:
        raise UnsupportedError("strategic-merge patches are matched by kind and name only")
    matched = [
        obj
        for obj in objects
        if obj["kind"] == body["kind"] and obj["metadata"]["name"] == body["metadata"]["name"]
    ]
    if len(matched) != 1:
        raise UnsupportedError(f"patch {patch} matches {len(matched)} objects")
    merged = _merge(matched[0], body)
    matched[0].clear()
    matched[0].update(merged)


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    actual = {"group": group, "version": version, "kind": obj["kind"]}
    unknown = set(target) - {*actual, "name"}
    if unknown:
        raise UnsupportedError(f"patch target fields {sorted(unknown)}")
    if "name" in target and re.fullmatch(target["name"], obj["metadata"]["name"]) is None:
        return False
    return all(actual[key] == value for key, value in target.items() if key != "name")


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged_list = copy.deepcopy(base)
        by_name = {item["name"]: i for i, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in by_name:
                index = by_name[item["name"]]
                merged_list[index] = _merge(merged_list[index], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def _json6902(obj: Obj, operation: Obj) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
    parent: Any = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    op = operation["op"]
    if op == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    elif op in ("add", "replace") and isinstance(parent, list):
        value = copy.deepcopy(operation["value"])
        if last == "-":
            parent.append(value)
        elif op == "add":
            parent.insert(int(last), value)
        else:
            parent[int(last)] = value
    elif op in ("add", "replace"):
        if op == "replace" and last not in parent:
            raise UnsupportedError(f"replace of missing {operation['path']}")
        parent[last] = copy.deepcopy(operation["value"])
    else:
        raise UnsupportedError(f"JSON 6902 op {op!r}")


def _set_images(node: Any, image: Obj) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    container["image"] = _new_image(container["image"], image)
            else:
                _set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, image)


def _new_image(current: str, image: Obj) -> str:
    name, tag, digest = current, None, None
    if "@" in name:
        name, digest = name.split("@", 1)
    elif ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != image["name"]:
        return current
    name = image.get("newName", name)
    if "digest" in image:
        return f"{name}@{image['digest']}"
    tag = image.get("newTag", tag)
    if tag is not None:
        return f"{name}:{tag}"
    return f"{name}@{digest}" if digest else name
