"""Gitea API v1: GitHub's field names, ``page``/``limit`` paging with ``X-Total-Count``, reviews with
``dismissed``/``stale`` flags, and ``GET /repos/{o}/{r}/commits/{sha}/pull``, which finds a pull request
by its merge commit only (so the merge commit is asked first, then the commit that changed the file)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from deployctl.edges.forge.client import MAX_PAGES, Forge, ForgeError, login, parse_time
from deployctl.model.review import PullRequest, Review, ReviewState

PAGE_SIZE = 50  # Gitea's default MAX_RESPONSE_ITEMS; a bigger limit is cut to it

_STATES = {
    "APPROVED": ReviewState.APPROVED,
    "REQUEST_CHANGES": ReviewState.CHANGES_REQUESTED,
    "COMMENT": ReviewState.COMMENTED,
    "PENDING": ReviewState.PENDING,
}


class Gitea(Forge):
    kind = "gitea"

    def api_base(self, url: str) -> str:
        return url if url.endswith("/api/v1") else f"{url}/api/v1"

    def paged(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        seen = 0
        for page in range(1, MAX_PAGES + 1):
            data, headers = self.client.get(self.client.url(path, {**(params or {}), "page": page,
                                                                   "limit": PAGE_SIZE}))
            if not isinstance(data, list):
                raise ForgeError(f"the forge (gitea) answered GET {path} with a {type(data).__name__}, not a list")
            yield from data
            seen += len(data)
            total = headers.get("x-total-count", "")
            if not data or (total.isdigit() and seen >= int(total)) or (not total.isdigit() and len(data) < PAGE_SIZE):
                return
        raise ForgeError(f"the forge (gitea) listing {path} has more than {MAX_PAGES} pages; refused")

    def pull_request_for(self, candidates: Sequence[str]) -> PullRequest | None:
        for sha in dict.fromkeys(candidates):
            data, _ = self.client.get(self.client.url(f"{self._repo()}/commits/{sha}/pull"), missing_ok=True)
            if isinstance(data, dict) and data.get("merged"):
                return self._pull_request(data)
        return None

    def _pull_request(self, data: Mapping[str, Any]) -> PullRequest:
        number = int(data["number"])
        authors: set[str] = set()
        emails: set[str] = set()
        for commit in self.paged(f"{self._repo()}/pulls/{number}/commits", {"stat": "false", "verification": "false",
                                                                            "files": "false"}):
            authors.update(n for n in (login(commit.get("author")), login(commit.get("committer"))) if n)
            git = commit.get("commit") or {}
            emails.update(str((git.get(k) or {}).get("email", "")).lower() for k in ("author", "committer"))
        head = (data.get("head") or {}).get("sha") or ""
        return PullRequest(number=number, url=str(data.get("html_url", "")), author=login(data.get("user")),
                           head_sha=str(head), merged=bool(data.get("merged")),
                           merge_sha=data.get("merge_commit_sha"), commit_authors=frozenset(authors),
                           commit_emails=frozenset(emails - {""}))

    def reviews(self, pr: PullRequest) -> tuple[Review, ...]:
        out = []
        for item in self.paged(f"{self._repo()}/pulls/{pr.number}/reviews"):
            state = _STATES.get(str(item.get("state", "")).upper())
            if state is None:  # REQUEST_REVIEW: a review asked for, not given
                continue
            user = item.get("user") or {}
            out.append(Review(reviewer=login(user), state=state, commit_sha=item.get("commit_id") or None,
                              submitted_at=parse_time(item.get("submitted_at")),
                              dismissed=bool(item.get("dismissed")), stale=bool(item.get("stale")),
                              email=(user.get("email") or None) if isinstance(user, dict) else None,
                              order=int(item.get("id") or 0)))
        return tuple(out)

    def team_members(self, team: str) -> frozenset[str]:
        org, _, name = team.lstrip("@").partition("/")
        found, _ = self.client.get(self.client.url(f"/orgs/{urllib.parse.quote(org, safe='')}/teams/search",
                                                   {"q": name, "limit": PAGE_SIZE}))
        teams = found.get("data") if isinstance(found, dict) else None
        match = [t for t in teams or () if str(t.get("name", "")).lower() == name.lower()]
        if not match:
            return frozenset()
        return frozenset(login(u) for u in self.paged(f"/teams/{int(match[0]['id'])}/members"))

    def _open_pulls_query(self, branch: str, base: str) -> dict[str, str]:
        return {"state": "open"}

    def _is_pull_of(self, pr: Mapping[str, Any], branch: str, base: str) -> bool:
        return bool((pr.get("head") or {}).get("ref") == branch and (pr.get("base") or {}).get("ref") == base)
