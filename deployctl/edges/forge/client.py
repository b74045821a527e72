"""The forge settings, the shared JSON client (paging, the token bound to the forge's origin) and the
:class:`Forge` base that turns one forge's answers into :class:`~deployctl.model.review.ReviewFacts`."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import structlog

from deployctl import settings
from deployctl.edges.http import HttpClient, HttpError, is_loopback, origin
from deployctl.errors import DeployctlError
from deployctl.model.review import OpenedPullRequest, PullRequest, Review, ReviewFacts
from deployctl.redact import redact

log = structlog.get_logger(__name__)

KINDS = ("github", "gitlab", "gitea")
MAX_PAGES = 50  # per listing: 2,500 to 5,000 items; more is refused, never silently cut
MAX_BYTES = 8 * 1024 * 1024


class ForgeError(DeployctlError):
    """The forge cannot be asked (not configured, unreachable, an error answer): forge approvals fail closed."""


@dataclass(frozen=True)
class ForgeSettings:
    """Which forge, where, which repository, and the token (runner settings, never repo content)."""

    kind: str
    url: str
    repo: str
    token: str | None = None
    deadline: float = 20.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ForgeSettings | None:
        """The settings from DEPLOYCTL_FORGE_TYPE, _URL, _REPO and _TOKEN; None when no forge is configured at all."""
        kind = settings.FORGE_TYPE.get(environ)
        url = settings.FORGE_URL.get(environ)
        repo = settings.FORGE_REPO.get(environ)
        if not (kind or url or repo):
            return None
        missing = [s.name for s, v in ((settings.FORGE_TYPE, kind), (settings.FORGE_URL, url),
                                       (settings.FORGE_REPO, repo)) if not v]
        if missing:
            raise ForgeError(f"the forge is only partly configured: set {', '.join(missing)}")
        assert kind is not None and url is not None and repo is not None
        made = cls(kind.strip().lower(), url.strip().rstrip("/"), repo.strip().strip("/"),
                   settings.FORGE_TOKEN.get(environ))
        made.check()
        return made

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ForgeError(f"{settings.FORGE_TYPE.name}={self.kind!r} is not one of {', '.join(KINDS)}")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query:
            raise ForgeError(f"{settings.FORGE_URL.name}={redact(self.url)!r} is not an http(s) base URL "
                             "without credentials or query")
        if parts.scheme == "http" and not is_loopback(parts.netloc):
            raise ForgeError(f"{settings.FORGE_URL.name}={self.url!r}: the token is sent over https only "
                             "(plain http is allowed on loopback)")
        segments = self.repo.split("/")
        if len(segments) < 2 or any(not s or s in (".", "..") for s in segments) or \
                (self.kind != "gitlab" and len(segments) != 2):
            raise ForgeError(f"{settings.FORGE_REPO.name}={self.repo!r} is not owner/name"
                             + (" (or a GitLab group/subgroup/project path)" if self.kind == "gitlab" else ""))


class ForgeClient:
    """GET JSON from one forge; the token goes to the forge's origin only."""

    def __init__(self, forge: ForgeSettings, *, base: str, auth: Mapping[str, str],
                 http: HttpClient | None = None) -> None:
        self.forge = forge
        self.base = base
        self._origin = origin(base)
        self._auth = dict(auth) if forge.token else {}
        self._http = http or HttpClient(user_agent="deployctl-forge")
        self._own_http = http is None
        self.calls = 0

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"{self.base}{path}{query}"

    def get(self, url: str, *, missing_ok: bool = False) -> tuple[Any, Mapping[str, str]]:
        """The decoded JSON at ``url`` and the answer's headers; ``(None, {})`` for a 404 when ``missing_ok``."""
        headers = {"Accept": "application/json"}
        if origin(url) == self._origin:  # the token is bound to the forge's scheme, host and port
            headers.update(self._auth)
        self.calls += 1
        try:
            response = self._http.request("GET", url, deadline=self.forge.deadline, headers=headers,
                                          max_bytes=MAX_BYTES, max_redirects=3,
                                          credential_headers=("authorization", "private-token"))
        except HttpError as exc:
            raise ForgeError(f"the forge ({self.forge.kind} at {self.base}) cannot be reached: {exc}") from exc
        if response.status == 404 and missing_ok:
            return None, {}
        if response.status >= 400:
            raise ForgeError(f"the forge ({self.forge.kind} at {self.base}) answered HTTP {response.status} to "
                             f"GET {_path(url)}: {_message(response.body)}")
        try:
            return json.loads(response.body or b"null"), response.headers
        except ValueError as exc:
            raise ForgeError(f"the forge ({self.forge.kind}) answered GET {_path(url)} with invalid JSON") from exc

    def send(self, method: str, url: str, body: Mapping[str, Any]) -> Any:
        """A write (POST, PATCH, PUT) of a JSON body; the decoded answer. Sent once, never retried."""
        if origin(url) != self._origin:
            raise ForgeError(f"refusing to send to {origin(url)[1]}: not the forge's host")
        headers = {"Accept": "application/json", "Content-Type": "application/json", **self._auth}
        self.calls += 1
        try:
            response = self._http.request(method, url, deadline=self.forge.deadline, headers=headers,
                                          body=json.dumps(body).encode(), max_bytes=MAX_BYTES)
        except HttpError as exc:
            raise ForgeError(f"the forge ({self.forge.kind} at {self.base}) cannot be reached: {exc}") from exc
        if response.status >= 400:
            raise ForgeError(f"the forge ({self.forge.kind} at {self.base}) answered HTTP {response.status} to "
                             f"{method} {_path(url)}: {_message(response.body)}")
        try:
            return json.loads(response.body or b"null")
        except ValueError as exc:
            raise ForgeError(f"the forge ({self.forge.kind}) answered {method} {_path(url)} with invalid JSON") from exc

    def next_url(self, current: str, link: str | None) -> str | None:
        """The ``rel="next"`` URL of a Link header, refused when it leaves the forge's origin."""
        for part in (link or "").split(","):
            if 'rel="next"' in part and "<" in part and ">" in part:
                target = urllib.parse.urljoin(current, part[part.index("<") + 1:part.index(">")])
                if origin(target) != self._origin:
                    raise ForgeError(f"the forge's next page points at another host ({origin(target)[1]}); "
                                     "not followed")
                return target
        return None


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return redact(body[:200].decode("utf-8", "replace")).strip() or "(no message)"
    if isinstance(data, dict):
        for key in ("message", "error", "error_description"):
            if isinstance(data.get(key), str):
                return redact(data[key][:300])
    return "(no message)"


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def login(user: object) -> str:
    """A user object's login, lowercase ('' when absent)."""
    if isinstance(user, dict):
        name = user.get("login") or user.get("username") or ""
        return str(name).lower()
    return ""


class Forge:
    """One forge's answers as review facts. Subclasses give the forge's paths and field names."""

    kind: ClassVar[str] = ""
    # the forge's words for a pull request and its writes (GitHub's and Gitea's by default)
    pulls: ClassVar[str] = "pulls"  # the listing under the repository's path
    number_key: ClassVar[str] = "number"  # a pull request's number in the forge's answers
    url_key: ClassVar[str] = "html_url"  # a pull request's (and a comment's) web URL
    branch_keys: ClassVar[tuple[str, str]] = ("head", "base")  # where a new pull request comes from, goes to
    body_key: ClassVar[str] = "body"  # a pull request's description
    edit_method: ClassVar[str] = "PATCH"  # how a pull request or a comment is edited
    author_key: ClassVar[str] = "user"  # who wrote a comment
    failure_state: ClassVar[str] = "failure"  # a failed commit status
    context_key: ClassVar[str] = "context"  # a commit status's name

    def __init__(self, forge: ForgeSettings, *, http: HttpClient | None = None) -> None:
        self.settings = forge
        self.client = ForgeClient(forge, base=self.api_base(forge.url), auth=self.auth_headers(forge.token or ""),
                                  http=http)

    def api_base(self, url: str) -> str:
        """The API's base URL for the forge's base URL (the token is bound to its origin)."""
        return url

    def auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}"}

    def close(self) -> None:
        self.client.close()

    # -- the questions every forge answers --

    def pull_request_for(self, candidates: Sequence[str]) -> PullRequest | None:
        """The merged pull request that brought one of ``candidates`` (merge commit first), or None."""
        raise NotImplementedError

    def reviews(self, pr: PullRequest) -> tuple[Review, ...]:
        raise NotImplementedError

    def team_members(self, team: str) -> frozenset[str]:
        """The logins (lowercase) of an ``@org/team`` approver."""
        raise NotImplementedError

    def open_pull_request(self, *, branch: str, base: str, title: str, body: str) -> OpenedPullRequest:
        """Open a pull request of ``branch`` into ``base``, or update the one already open for it."""
        pulls = f"{self._repo()}/{self.pulls}"
        for pr in self.paged(pulls, self._open_pulls_query(branch, base)):
            if self._is_pull_of(pr, branch, base):
                number = int(pr[self.number_key])
                self.client.send(self.edit_method, self.client.url(f"{pulls}/{number}"),
                                 {"title": title, self.body_key: body})
                return OpenedPullRequest(number, str(pr.get(self.url_key, "")), created=False)
        source, target = self.branch_keys
        made = self.client.send("POST", self.client.url(pulls),
                                {source: branch, target: base, "title": title, self.body_key: body})
        return OpenedPullRequest(int(made[self.number_key]), str(made.get(self.url_key, "")), created=True)

    def comment(self, number: int, body: str, *, marker: str) -> str:
        """Post ``body`` on pull request ``number``, or edit the token user's earlier comment holding
        ``marker`` (one comment per pull request, kept current). Returns the comment's URL."""
        me, _ = self.client.get(self.client.url("/user"))
        comments = self._comments_path(number)
        for c in self.paged(comments):
            if login(c.get(self.author_key)) == login(me) and marker in str(c.get("body", "")):
                self.client.send(self.edit_method, self.client.url(self._comment_path(number, int(c["id"]))),
                                 {"body": body})
                return self._comment_ref(c)
        return self._comment_ref(self.client.send("POST", self.client.url(comments), {"body": body}))

    def set_status(self, sha: str, *, ok: bool, context: str, description: str) -> None:
        """Set the commit status ``context`` of ``sha``: success or failure."""
        self.client.send("POST", self.client.url(f"{self._repo()}/statuses/{sha}"),
                         {"state": "success" if ok else self.failure_state, self.context_key: context,
                          "description": description[:140]})

    # -- the forge's paths, where its API differs --

    def _repo(self) -> str:
        """The API path of the repository (``owner/name``)."""
        owner, name = self.settings.repo.split("/")
        return f"/repos/{urllib.parse.quote(owner, safe='')}/{urllib.parse.quote(name, safe='')}"

    def _open_pulls_query(self, branch: str, base: str) -> dict[str, str]:
        """The query listing the open pull requests that may be of ``branch`` into ``base``."""
        raise NotImplementedError

    def _is_pull_of(self, pr: Mapping[str, Any], branch: str, base: str) -> bool:
        """Whether a listed pull request is of ``branch`` into ``base`` (when the query cannot tell)."""
        return True

    def _comments_path(self, number: int) -> str:
        return f"{self._repo()}/issues/{number}/comments"

    def _comment_path(self, number: int, comment: int) -> str:
        return f"{self._repo()}/issues/comments/{comment}"

    def _comment_ref(self, comment: Mapping[str, Any]) -> str:
        """What :meth:`comment` returns for a comment of the forge's answers."""
        return str(comment.get(self.url_key, ""))

    def freshness_problem(self) -> str | None:
        """Why this forge's approvals cannot be proved to be on the final head (None: they can)."""
        return None

    def review_facts(self, candidates: Sequence[str], approvers: Sequence[str]) -> ReviewFacts:
        """Everything the rule needs about the change that ``candidates`` (merge commit, changing commit) made."""
        pr = self.pull_request_for(candidates)
        if pr is None:
            return ReviewFacts(None)
        teams = {a.lower(): self.team_members(a) for a in approvers if a.startswith("@") and "/" in a}
        facts = ReviewFacts(pr, self.reviews(pr), teams, self.freshness_problem())
        log.info("forge.reviews", forge=self.kind, pr=pr.number, reviews=len(facts.reviews), calls=self.client.calls)
        return facts

    # -- paging --

    def paged(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a listing, following the forge's paging; more than MAX_PAGES pages is an error."""
        url: str | None = self.client.url(path, {**(params or {}), "per_page": 100})
        for _ in range(MAX_PAGES):
            assert url is not None
            data, headers = self.client.get(url)
            if not isinstance(data, list):
                raise ForgeError(f"the forge ({self.kind}) answered GET {path} with a {type(data).__name__}, "
                                 "not a list")
            yield from data
            url = self.client.next_url(url, headers.get("link"))
            if url is None:
                return
        raise ForgeError(f"the forge ({self.kind}) listing {path} has more than {MAX_PAGES} pages; refused")
