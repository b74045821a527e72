"""The forge clients (edges/forge) against recorded answers of GitHub REST, GitLab v4 and Gitea API v1:
paging, field names, what each forge can prove; and the forge settings. No network: a recording transport."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from deployctl.edges.forge import ForgeError, ForgeSettings, open_forge
from deployctl.edges.http import Response
from deployctl.model.review import ReviewState
from deployctl.rules.review import ReviewPolicy, check_reviews

HEAD = "1" * 40
OLD = "2" * 40
MERGE = "3" * 40
CHANGED = "4" * 40


class Recorded:
    """An HttpClient stand-in answering from recorded responses by URL; it keeps every request it got."""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        self.answers = dict(answers)
        self.sent: list[tuple[str, dict[str, str]]] = []

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **_: Any) -> Response:
        self.sent.append((url, dict(headers or {})))
        answer = self.answers.get(url)
        if answer is None:
            return Response(404, {}, b'{"message": "Not Found"}', url)
        status, extra, body = answer if isinstance(answer, tuple) else (200, {}, answer)
        return Response(status, {k.lower(): v for k, v in extra.items()}, json.dumps(body).encode(), url)

    def close(self) -> None:
        pass


def forge(kind: str, url: str, repo: str, answers: Mapping[str, Any]):
    http = Recorded(answers)
    return open_forge(ForgeSettings(kind, url, repo, "s3cret"), http=http), http  # type: ignore[arg-type]


# --- GitHub ---------------------------------------------------------------------------------------

GH = "https://api.github.com/repos/acme/deploy"
GH_PR = {"number": 12, "html_url": "https://github.com/acme/deploy/pull/12", "user": {"login": "Alice"},
         "head": {"sha": HEAD}, "merged_at": "2026-12-01T10:00:00Z", "merge_commit_sha": MERGE}


def github_answers(reviews: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{GH}/commits/{MERGE}/pulls?per_page=100": [GH_PR],
        f"{GH}/commits/{CHANGED}/pulls?per_page=100": [GH_PR],
        f"{GH}/pulls/12/commits?per_page=100": (200, {"Link": f'<{GH}/pulls/12/commits?per_page=100&page=2>; '
                                                              'rel="next"'}, [
            {"sha": OLD, "author": {"login": "alice"}, "committer": {"login": "web-flow"},
             "commit": {"author": {"email": "alice@example.com"}, "committer": {"email": "noreply@github.com"}}}]),
        f"{GH}/pulls/12/commits?per_page=100&page=2": [
            {"sha": HEAD, "author": None, "committer": None,
             "commit": {"author": {"email": "Dave@Example.com"}, "committer": {"email": "dave@example.com"}}}],
        f"{GH}/pulls/12/reviews?per_page=100": reviews,
        "https://api.github.com/orgs/acme/teams/sre/members?per_page=100": [{"login": "Carol"}],
    }


def gh_review(i: int, who: str, state: str, sha: str = HEAD) -> dict[str, Any]:
    return {"id": i, "user": {"login": who}, "state": state, "commit_id": sha,
            "submitted_at": f"2026-12-01T09:0{i}:00Z"}


def test_github_reviews_pages_and_teams_become_facts_the_rule_approves() -> None:
    client, http = forge("github", "https://github.com", "acme/deploy",
                         github_answers([gh_review(1, "bob", "COMMENTED"), gh_review(2, "bob", "APPROVED"),
                                         gh_review(3, "Carol", "APPROVED")]))
    facts = client.review_facts([MERGE, CHANGED], ["@bob", "@acme/sre"])
    pr = facts.pull_request
    assert pr is not None and (pr.number, pr.author, pr.head_sha) == (12, "alice", HEAD)
    assert pr.commit_authors == {"alice"} and "dave@example.com" in pr.commit_emails  # page 2 was read
    assert facts.teams == {"@acme/sre": frozenset({"carol"})}
    verdict = check_reviews(facts, ReviewPolicy("production", ("@bob", "@acme/sre"), 2))
    assert verdict.approved and [a.who for a in verdict.record.approvals] == ["@bob", "@carol"]  # type: ignore[union-attr]
    assert all(h.get("Authorization") == "Bearer s3cret" for _, h in http.sent)


def test_github_dismissed_state_and_an_earlier_commit_id_do_not_count() -> None:
    client, _ = forge("github", "https://github.com", "acme/deploy",
                      github_answers([gh_review(1, "bob", "DISMISSED"), gh_review(2, "carol", "APPROVED", OLD)]))
    facts = client.review_facts([MERGE], ["@bob", "@carol"])
    assert [r.state for r in facts.reviews] == [ReviewState.DISMISSED, ReviewState.APPROVED]
    verdict = check_reviews(facts, ReviewPolicy("production", ("@bob", "@carol")))
    assert not verdict.approved and "stale" in verdict.reason and "github.com/acme/deploy/pull/12" in verdict.reason


def test_github_enterprise_api_base_and_a_commit_without_a_merged_pr() -> None:
    client, http = forge("github", "https://ghe.example.com", "acme/deploy", {
        f"https://ghe.example.com/api/v3/repos/acme/deploy/commits/{CHANGED}/pulls?per_page=100":
            [{**GH_PR, "merged_at": None}]})
    assert client.review_facts([CHANGED], ["@bob"]).pull_request is None
    assert http.sent[0][0].startswith("https://ghe.example.com/api/v3/")


# --- GitLab ---------------------------------------------------------------------------------------

GL = "https://gitlab.example.com/api/v4/projects/acme%2Fplatform%2Fdeploy"


def gitlab_answers(settings: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{GL}/repository/commits/{MERGE}/merge_requests?per_page=100&page=1": [
            {"iid": 5, "state": "merged", "merge_commit_sha": MERGE}],
        f"{GL}/merge_requests/5": {"iid": 5, "web_url": "https://gitlab.example.com/acme/platform/deploy/-/merge_requests/5",
                                   "author": {"username": "alice"}, "sha": HEAD, "state": "merged",
                                   "merge_commit_sha": MERGE},
        f"{GL}/merge_requests/5/commits?per_page=100&page=1": (200, {"X-Next-Page": "2"}, [
            {"author_email": "alice@example.com", "committer_email": "alice@example.com"}]),
        f"{GL}/merge_requests/5/commits?per_page=100&page=2": (200, {"X-Next-Page": ""}, [
            {"author_email": "erin@example.com", "committer_email": "erin@example.com"}]),
        f"{GL}/merge_requests/5/approvals": {"approved_by": [{"user": {"username": "bob"}}]},
        f"{GL}/approvals": settings,
        "https://gitlab.example.com/api/v4/groups/acme%2Fsre/members/all?per_page=100&page=1": [{"username": "carol"}],
    }


FRESH = {"reset_approvals_on_push": True, "merge_requests_author_approval": False,
         "merge_requests_disable_committers_approval": True}


def test_gitlab_approvals_count_only_when_the_project_resets_them_on_push() -> None:
    client, http = forge("gitlab", "https://gitlab.example.com", "acme/platform/deploy", gitlab_answers(FRESH))
    facts = client.review_facts([MERGE], ["@bob", "@acme/sre"])
    assert facts.not_fresh is None and facts.teams == {"@acme/sre": frozenset({"carol"})}
    assert facts.pull_request is not None and "erin@example.com" in facts.pull_request.commit_emails
    verdict = check_reviews(facts, ReviewPolicy("production", ("@bob",)))
    assert verdict.approved and verdict.record.approvals[0].head_sha == HEAD  # type: ignore[union-attr]
    assert all(h.get("PRIVATE-TOKEN") == "s3cret" and "Authorization" not in h for _, h in http.sent)

    client, _ = forge("gitlab", "https://gitlab.example.com", "acme/platform/deploy",
                      gitlab_answers({**FRESH, "reset_approvals_on_push": False}))
    verdict = check_reviews(client.review_facts([MERGE], ["@bob"]), ReviewPolicy("production", ("@bob",)))
    assert not verdict.approved and "reset_approvals_on_push" in verdict.reason and "merge_requests/5" in verdict.reason


def test_gitlab_refuses_when_committers_may_approve() -> None:
    client, _ = forge("gitlab", "https://gitlab.example.com", "acme/platform/deploy",
                      gitlab_answers({**FRESH, "merge_requests_disable_committers_approval": False}))
    verdict = check_reviews(client.review_facts([MERGE], ["@bob"]), ReviewPolicy("production", ("@bob",)))
    assert not verdict.approved and "committers may approve" in verdict.reason


# --- Gitea paging and errors --------------------------------------------------------------------------

GT = "https://git.example.com/api/v1/repos/acme/deploy"


def test_gitea_pages_by_page_and_limit_until_x_total_count() -> None:
    first = [{"id": i, "user": {"login": f"u{i}"}, "state": "COMMENT", "commit_id": HEAD} for i in range(50)]
    client, http = forge("gitea", "https://git.example.com", "acme/deploy", {
        f"{GT}/commits/{MERGE}/pull": {"number": 3, "merged": True, "html_url": "https://git.example.com/acme/deploy/pulls/3",
                                       "user": {"login": "alice"}, "head": {"sha": HEAD}},
        f"{GT}/pulls/3/commits?stat=false&verification=false&files=false&page=1&limit=50": [],
        f"{GT}/pulls/3/reviews?page=1&limit=50": (200, {"X-Total-Count": "52"}, first),
        f"{GT}/pulls/3/reviews?page=2&limit=50": (200, {"X-Total-Count": "52"}, [
            {"id": 60, "user": {"login": "bob"}, "state": "APPROVED", "commit_id": HEAD, "stale": True},
            {"id": 61, "user": {"login": "carol"}, "state": "REQUEST_REVIEW", "commit_id": HEAD}]),
    })
    facts = client.review_facts([MERGE, CHANGED], ["@bob"])
    assert len(facts.reviews) == 51 and facts.reviews[-1].stale  # REQUEST_REVIEW is a request, not a review
    assert not any("page=3" in url for url, _ in http.sent)
    assert not any(f"/commits/{CHANGED}/pull" in url for url, _ in http.sent)  # the merge commit was found first


def test_a_forge_error_answer_is_a_forge_error_naming_status_and_path() -> None:
    client, _ = forge("gitea", "https://git.example.com", "acme/deploy",
                      {f"{GT}/commits/{MERGE}/pull": (500, {}, {"message": "database is locked"})})
    with pytest.raises(ForgeError, match=r"HTTP 500 to GET /api/v1/repos/acme/deploy/commits/.*database is locked"):
        client.review_facts([MERGE], ["@bob"])


def test_a_next_page_on_another_host_is_not_followed() -> None:
    client, http = forge("github", "https://github.com", "acme/deploy", {
        f"{GH}/commits/{MERGE}/pulls?per_page=100": (200, {"Link": '<https://evil.example/steal>; rel="next"'}, [])})
    with pytest.raises(ForgeError, match="another host"):
        client.review_facts([MERGE], ["@bob"])
    assert all("evil" not in url for url, _ in http.sent)


# --- settings -----------------------------------------------------------------------------------------


def env(**values: str) -> dict[str, str]:
    return {f"DEPLOYCTL_FORGE_{k.upper()}": v for k, v in values.items()}


def test_forge_settings_are_read_from_the_runner_environment() -> None:
    assert ForgeSettings.from_env({}) is None
    made = ForgeSettings.from_env(env(type="GitHub", url="https://github.com/", repo="acme/deploy", token="t"))
    assert made == ForgeSettings("github", "https://github.com", "acme/deploy", "t")
    assert ForgeSettings.from_env(env(type="gitlab", url="https://gl.example", repo="a/b/c")) is not None


@pytest.mark.parametrize(("values", "message"), [
    ({"type": "gitea"}, "only partly configured: set DEPLOYCTL_FORGE_URL, DEPLOYCTL_FORGE_REPO"),
    ({"type": "bitbucket", "url": "https://b.example", "repo": "a/b"}, "not one of github, gitlab, gitea"),
    ({"type": "gitea", "url": "http://git.example.com", "repo": "a/b"}, "https only"),
    ({"type": "gitea", "url": "https://user:pw@git.example.com", "repo": "a/b"}, "without credentials"),
    ({"type": "github", "url": "https://github.com", "repo": "a/b/c"}, "not owner/name"),
    ({"type": "gitea", "url": "https://git.example.com", "repo": "a/.."}, "not owner/name"),
])
def test_bad_forge_settings_are_errors_naming_the_variable(values: dict[str, str], message: str) -> None:
    with pytest.raises(ForgeError, match=message):
        ForgeSettings.from_env(env(**values))
    assert "pw" not in str(message)


def test_plain_http_is_allowed_on_loopback_only() -> None:
    assert ForgeSettings.from_env(env(type="gitea", url="http://127.0.0.1:3000", repo="a/b")) is not None


class Writes(Recorded):
    """Recorded answers for GETs; every write is kept and answered with ``made``."""

    def __init__(self, answers: Mapping[str, Any], made: dict[str, Any]) -> None:
        super().__init__(answers)
        self.made = made
        self.writes: list[tuple[str, str, Any]] = []

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kw: Any) -> Response:
        if method == "GET":
            return super().request(method, url, headers=headers)
        self.writes.append((method, url, json.loads(kw["body"])))
        return Response(201, {}, json.dumps(self.made).encode(), url)


def test_github_open_pull_request_updates_the_open_one_for_the_branch() -> None:
    http = Writes({f"{GH}/pulls?state=open&head=acme%3Adeployctl%2Fpromote-production-web&base=main&per_page=100":
                   [{"number": 9, "html_url": "https://github.com/acme/deploy/pull/9"}]}, {})
    client = open_forge(ForgeSettings("github", "https://github.com", "acme/deploy", "t"), http=http)  # type: ignore[arg-type]
    opened = client.open_pull_request(branch="deployctl/promote-production-web", base="main", title="Promote",
                                      body="diff")
    assert (opened.number, opened.created) == (9, False)
    assert http.writes == [("PATCH", f"{GH}/pulls/9", {"title": "Promote", "body": "diff"})]


def test_gitlab_comment_edits_its_own_note_and_sets_a_failed_status() -> None:
    notes = f"{GL}/merge_requests/5/notes"
    http = Writes({"https://gitlab.example.com/api/v4/user": {"username": "deploy-bot"},
                   f"{notes}?per_page=100&page=1": [
                       {"id": 1, "author": {"username": "mallory"}, "body": "<!-- m --> fake"},
                       {"id": 2, "author": {"username": "deploy-bot"}, "body": "<!-- m --> old"}]}, {})
    client = open_forge(ForgeSettings("gitlab", "https://gitlab.example.com", "acme/platform/deploy", "t"),
                        http=http)  # type: ignore[arg-type]
    client.comment(5, "<!-- m --> new", marker="<!-- m -->")
    client.set_status(HEAD, ok=False, context="deployctl/plan", description="gate failed")
    assert http.writes == [
        ("PUT", f"{notes}/2", {"body": "<!-- m --> new"}),
        ("POST", f"{GL}/statuses/{HEAD}", {"state": "failed", "name": "deployctl/plan", "description": "gate failed"}),
    ]
