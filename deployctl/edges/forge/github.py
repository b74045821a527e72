"""GitHub REST (github.com or a GitHub Enterprise Server base URL): ``per_page`` paging with Link headers,
``GET /repos/{o}/{r}/commits/{sha}/pulls`` for the pull requests a commit belongs to, reviews with
``commit_id`` and a DISMISSED state (no stale flag: a review on an earlier head is stale by its SHA)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from deployctl.edges.forge.client import Forge, login, parse_time
from deployctl.model.review import PullRequest, Review, ReviewState

_STATES = {
    "APPROVED": ReviewState.APPROVED,
    "CHANGES_REQUESTED": ReviewState.CHANGES_REQUESTED,
    "COMMENTED": ReviewState.COMMENTED,
    "PENDING": ReviewState.PENDING,
    "DISMISSED": ReviewState.DISMISSED,
}


class GitHub(Forge):
    kind = "github"

    def api_base(self, url: str) -> str:
        host = urllib.parse.urlsplit(url).hostname or ""
        if host in ("github.com", "www.github.com"):
            return "https://api.github.com"
        if host == "api.github.com" or url.endswith("/api/v3"):
            return url
        return f"{url}/api/v3"

    def auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "X-GitHub-Api-Version": "2022-11-28"}

    def pull_request_for(self, candidates: Sequence[str]) -> PullRequest | None:
        wanted = list(dict.fromkeys(candidates))
        merged: list[Mapping[str, Any]] = []
        for sha in wanted:
            for pr in self.paged(f"{self._repo()}/commits/{sha}/pulls"):
                if pr.get("merged_at") and pr not in merged:
                    merged.append(pr)
        if not merged:
            return None
        # the pull request whose merge (or squash/rebase result) is one of the candidates, in their order
        for sha in wanted:
            for pr in merged:
                if pr.get("merge_commit_sha") == sha:
                    return self._pull_request(pr)
        return self._pull_request(merged[0])

    def _pull_request(self, data: Mapping[str, Any]) -> PullRequest:
        number = int(data["number"])
        authors: set[str] = set()
        emails: set[str] = set()
        for commit in self.paged(f"{self._repo()}/pulls/{number}/commits"):
            authors.update(n for n in (login(commit.get("author")), login(commit.get("committer"))) if n)
            git = commit.get("commit") or {}
            emails.update(str((git.get(k) or {}).get("email", "")).lower() for k in ("author", "committer"))
        authors.discard("web-flow")  # GitHub's committer of commits made in its web UI, not a person
        emails.discard("noreply@github.com")
        return PullRequest(number=number, url=str(data.get("html_url", "")), author=login(data.get("user")),
                           head_sha=str((data.get("head") or {}).get("sha") or ""), merged=bool(data.get("merged_at")),
                           merge_sha=data.get("merge_commit_sha"), commit_authors=frozenset(authors),
                           commit_emails=frozenset(emails - {""}))

    def reviews(self, pr: PullRequest) -> tuple[Review, ...]:
        out = []
        for item in self.paged(f"{self._repo()}/pulls/{pr.number}/reviews"):
            state = _STATES.get(str(item.get("state", "")).upper())
            if state is None:
                continue
            out.append(Review(reviewer=login(item.get("user")), state=state, commit_sha=item.get("commit_id") or None,
                              submitted_at=parse_time(item.get("submitted_at")),
                              dismissed=state is ReviewState.DISMISSED, order=int(item.get("id") or 0)))
        return tuple(out)

    def team_members(self, team: str) -> frozenset[str]:
        org, _, slug = team.lstrip("@").partition("/")
        path = f"/orgs/{urllib.parse.quote(org, safe='')}/teams/{urllib.parse.quote(slug.lower(), safe='')}/members"
        return frozenset(login(u) for u in self.paged(path))

    def _open_pulls_query(self, branch: str, base: str) -> dict[str, str]:
        owner = self.settings.repo.split("/")[0]
        return {"state": "open", "head": f"{owner}:{branch}", "base": base}
