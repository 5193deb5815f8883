"""Conversation threading within a source: post id -> the id of its thread's root.

Replies join their root's conversation (the Kafka key), so a complaint, the brand's answer
and the customer's follow-up land on one partition, in order, and in one case. Each source
keeps a bounded index of the posts it has seen; a reply whose parent it has not seen is
resolved by the connector (Mastodon asks the API for the thread's context) or, failing
that, joins its parent's conversation.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_SIZE = 50_000


class ThreadIndex:
    """A least-recently-used map of post id -> root id."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._roots: OrderedDict[str, str] = OrderedDict()

    def root(self, post_id: str) -> str | None:
        root = self._roots.get(post_id)
        if root is not None:
            self._roots.move_to_end(post_id)
        return root

    def add(self, post_id: str, parent_id: str | None, parent_root: str | None = None) -> str:
        """Record a post; returns its root (the parent's root, else the given
        ``parent_root``, else the parent itself; the post itself when it is no reply)."""
        if parent_id is None:
            root = self._roots.get(post_id, post_id)
        else:
            root = self.root(parent_id) or parent_root or parent_id
        self._roots[post_id] = root
        self._roots.move_to_end(post_id)
        while len(self._roots) > self.size:
            self._roots.popitem(last=False)
        return root

    def __contains__(self, post_id: object) -> bool:
        return post_id in self._roots

    def __len__(self) -> int:
        return len(self._roots)
