"""How `deployctl watch --repo` is understood, and that credentials never reach the display form."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployctl.edges.git.mirror import classify, default_mirror_dir
from deployctl.errors import InvalidInputError


def test_relative_path_is_made_absolute():
    s = classify("deploy.git", cwd=Path("/srv"))
    assert (s.kind, s.url) == ("local", "/srv/deploy.git")


def test_file_url_is_a_local_path():
    assert classify("file:///srv/deploy.git").url == "/srv/deploy.git"


def test_https_userinfo_is_kept_out_of_the_display_form():
    s = classify("https://user:tok3n@github.com/acme/deploy.git")
    assert s.kind == "https"
    assert "tok3n" not in s.display and s.display == "https://github.com/acme/deploy.git"


def test_ssh_urls_and_scp_like_addresses():
    s = classify("ssh://deploy@git.example.com:2222/acme/deploy.git")
    assert (s.kind, s.ssh_user, s.display) == ("ssh", "deploy", "ssh://git.example.com:2222/acme/deploy.git")
    s = classify("git@github.com:acme/deploy.git")
    assert (s.kind, s.ssh_user, s.display) == ("ssh", "git", "github.com:acme/deploy.git")


def test_unsupported_scheme_is_refused_with_what_to_use():
    with pytest.raises(InvalidInputError, match="unsupported scheme 'ftp'"):
        classify("ftp://example.com/deploy.git")


def test_mirror_dir_defaults_to_a_per_repo_cache_dir_whose_parent_holds_no_other_mirror():
    a = default_mirror_dir("https://a/deploy.git", {"XDG_CACHE_HOME": "/c"})
    b = default_mirror_dir("https://b/deploy.git", {"XDG_CACHE_HOME": "/c"})
    assert a.parent.parent == Path("/c/deployctl/mirrors") and a.name == "deploy.git"
    # the parent is the default source root: `source: ../<other hash>` must not reach another repo's mirror
    assert a.parent != b.parent
    assert default_mirror_dir("x", {"DEPLOYCTL_MIRROR_DIR": "/m"}) == Path("/m")
