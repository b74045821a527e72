"""GitLab REST v4: merge requests and their approvals. Approvals carry no SHA and no time, so they are
fresh only when the project resets them on every push (``reset_approvals_on_push``), and a committer
cannot approve only when ``merge_requests_disable_committers_approval`` is set (GitLab knows commits by
email, not user): without both, forge approvals are refused (:meth:`GitLab.freshness_problem`)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from deployctl.edges.forge.client import MAX_PAGES, Forge, ForgeError, login
from deployctl.model.review import PullRequest, Review, ReviewState


class GitLab(Forge):
    kind = "gitlab"

    def api_base(self, url: str) -> str:
        return url if url.endswith("/api/v4") else f"{url}/api/v4"

    def auth_headers(self, token: str) -> dict[str, str]:
        return {"PRIVATE-TOKEN": token}

    pulls = "merge_requests"
    number_key = "iid"
    url_key = "web_url"
    branch_keys = ("source_branch", "target_branch")
    body_key = "description"
    edit_method = "PUT"
    author_key = "author"
    failure_state = "failed"
    context_key = "name"

    def _repo(self) -> str:
        return f"/projects/{urllib.parse.quote(self.settings.repo, safe='')}"

    def paged(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        page: str | None = "1"
        for _ in range(MAX_PAGES):
            data, headers = self.client.get(self.client.url(path, {**(params or {}), "per_page": 100, "page": page}))
            if not isinstance(data, list):
                raise ForgeError(f"the forge (gitlab) answered GET {path} with a {type(data).__name__}, not a list")
            yield from data
            page = (headers.get("x-next-page") or "").strip() or None
            if page is None or not page.isdigit():
                return
        raise ForgeError(f"the forge (gitlab) listing {path} has more than {MAX_PAGES} pages; refused")

    def pull_request_for(self, candidates: Sequence[str]) -> PullRequest | None:
        wanted = list(dict.fromkeys(candidates))
        merged: list[Mapping[str, Any]] = []
        for sha in wanted:
            for mr in self.paged(f"{self._repo()}/repository/commits/{sha}/merge_requests"):
                if mr.get("state") == "merged" and all(m.get("iid") != mr.get("iid") for m in merged):
                    merged.append(mr)
        if not merged:
            return None
        chosen = merged[0]
        for sha in wanted:
            hit = [m for m in merged if sha in (m.get("merge_commit_sha"), m.get("squash_commit_sha"))]
            if hit:
                chosen = hit[0]
                break
        iid = int(chosen["iid"])
        data, _ = self.client.get(self.client.url(f"{self._repo()}/merge_requests/{iid}"))
        emails: set[str] = set()
        for commit in self.paged(f"{self._repo()}/merge_requests/{iid}/commits"):
            emails.update(str(commit.get(k) or "").lower() for k in ("author_email", "committer_email"))
        return PullRequest(number=iid, url=str(data.get("web_url", "")), author=login(data.get("author")),
                           head_sha=str(data.get("sha") or ""), merged=data.get("state") == "merged",
                           merge_sha=data.get("merge_commit_sha") or data.get("squash_commit_sha"),
                           commit_emails=frozenset(emails - {""}))

    def reviews(self, pr: PullRequest) -> tuple[Review, ...]:
        data, _ = self.client.get(self.client.url(f"{self._repo()}/merge_requests/{pr.number}/approvals"))
        approved_by = data.get("approved_by") if isinstance(data, dict) else None
        # no SHA and no time: what the project settings make fresh is checked in freshness_problem
        return tuple(Review(reviewer=login(entry.get("user")), state=ReviewState.APPROVED, commit_sha=None,
                            submitted_at=None, order=i) for i, entry in enumerate(approved_by or ()))

    def freshness_problem(self) -> str | None:
        data, _ = self.client.get(self.client.url(f"{self._repo()}/approvals"))
        if not isinstance(data, dict):
            return "the project's approval settings cannot be read"
        problems = []
        if data.get("reset_approvals_on_push") is not True:
            problems.append("the project does not reset approvals on push (reset_approvals_on_push), so an "
                            "approval may be of an earlier head")
        if data.get("merge_requests_disable_committers_approval") is not True:
            problems.append("committers may approve (merge_requests_disable_committers_approval is off), and "
                            "GitLab names commit authors by email only")
        return "; ".join(problems) or None

    def team_members(self, team: str) -> frozenset[str]:
        group = team.lstrip("@")
        path = f"/groups/{urllib.parse.quote(group, safe='')}/members/all"
        return frozenset(login(u) for u in self.paged(path))

    def _open_pulls_query(self, branch: str, base: str) -> dict[str, str]:
        return {"state": "opened", "source_branch": branch, "target_branch": base}

    def _comments_path(self, number: int) -> str:
        return f"{self._repo()}/merge_requests/{number}/notes"

    def _comment_path(self, number: int, comment: int) -> str:
        return f"{self._comments_path(number)}/{comment}"

    def _comment_ref(self, comment: Mapping[str, Any]) -> str:
        return f"note {int(comment.get('id') or 0)}"
