"""Route names for metrics and logs: a closed set, whatever path a client sends."""

from __future__ import annotations

ROUTE_NAMES = (
    "videos.create",
    "videos.list",
    "videos.retrieve",
    "videos.delete",
    "videos.content",
    "videos.remix",
    "videos.edit",
    "videos.extend",
    "videos.character_create",
    "videos.character_retrieve",
    "other",
)

_FIXED = {
    ("POST", ("videos",)): "videos.create",
    ("GET", ("videos",)): "videos.list",
    ("POST", ("videos", "edits")): "videos.edit",
    ("POST", ("videos", "extensions")): "videos.extend",
    ("POST", ("videos", "characters")): "videos.character_create",
}
# `/videos/{id}` and `/videos/{id}/<tail>`, by (method, tail).
_WITH_ID = {
    ("GET", ""): "videos.retrieve",
    ("DELETE", ""): "videos.delete",
    ("GET", "content"): "videos.content",
    ("POST", "remix"): "videos.remix",
}


def route_name(method: str, path: str) -> str:
    """The route a request addresses (by path shape and method), or `other`: never a raw path."""
    for prefix in ("/openai/v1/", "/openai/"):
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            break
    else:
        return "other"
    segments = tuple(rest.rstrip("/").split("/"))
    if not segments or segments[0] != "videos" or any(segment == "" for segment in segments):
        return "other"
    fixed = _FIXED.get((method, segments))
    if fixed is not None:
        return fixed
    if len(segments) == 3 and segments[1] == "characters":
        return "videos.character_retrieve" if method == "GET" else "other"
    if len(segments) == 2 and segments[1] not in ("edits", "extensions", "characters"):
        return _WITH_ID.get((method, ""), "other")
    if len(segments) == 3:
        return _WITH_ID.get((method, segments[2]), "other")
    return "other"
