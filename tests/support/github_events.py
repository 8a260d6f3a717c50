"""GitHub's ``repository`` webhooks as GitHub delivers them, made from a made-up repository.

The repository is one of :func:`tests.support.fake_apis.make_repo`: the same item the GitHub
lookalike serves to a cycle, so an event's entity can be compared with the cycle's.
"""

from __future__ import annotations

from typing import Any

from ingestion.provider import Event


def rest_repository(repo: dict[str, Any], org: str = "acme") -> dict[str, Any]:
    """``repo`` (a :func:`make_repo`) as a webhook's ``repository``: GitHub's REST shape, with
    the fields the entity does not use as well."""
    owner = repo["full_name"].split("/")[0]
    name = repo["name"]
    return {
        "id": repo["id"],
        "node_id": f"R_kgDO{repo['id']:08d}",
        "name": name,
        "full_name": repo["full_name"],
        "private": repo.get("visibility") != "public",
        "owner": {
            "login": owner,
            "id": 9919,
            "node_id": "O_kgDOAAAmvw",
            "type": "Organization",
            "site_admin": False,
        },
        "html_url": repo["html_url"],
        "description": repo["description"],
        "fork": False,
        "url": f"https://api.github.example/repos/{owner}/{name}",
        "created_at": repo["created_at"],
        "updated_at": "2024-05-01T12:00:00Z",
        "pushed_at": "2024-05-01T11:59:00Z",
        "git_url": f"git://github.example/{owner}/{name}.git",
        "ssh_url": f"git@github.example:{owner}/{name}.git",
        "clone_url": f"https://github.example/{owner}/{name}.git",
        "homepage": None,
        "size": 1234,
        "stargazers_count": 3,
        "watchers_count": 3,
        "language": "Python",
        "has_issues": True,
        "forks_count": 0,
        "archived": repo["archived"],
        "disabled": False,
        "open_issues_count": 1,
        "license": None,
        "allow_forking": False,
        "is_template": False,
        "topics": list(repo["topics"]),
        "visibility": repo.get("visibility", "private"),
        "forks": 0,
        "open_issues": 1,
        "watchers": 3,
        "default_branch": "main",
    }


def webhook(
    action: str,
    repo: dict[str, Any],
    *,
    org: str = "acme",
    changes: dict[str, Any] | None = None,
    topic: str = "github",
    kind: str = "repository",
) -> Event:
    """A ``repository`` webhook as GitHub delivers it to an organisation's hook."""
    payload: dict[str, Any] = {
        "action": action,
        "repository": rest_repository(repo),
        "organization": {
            "login": org,
            "id": 9919,
            "node_id": "O_kgDOAAAmvw",
            "url": f"https://api.github.example/orgs/{org}",
            "description": "",
        },
        "sender": {"login": "octocat", "id": 1, "type": "User", "site_admin": False},
    }
    if changes is not None:
        payload["changes"] = changes
    headers = {
        "x-github-event": kind,
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "x-github-hook-id": "292430182",
        "x-github-hook-installation-target-type": "organization",
        "user-agent": "GitHub-Hookshot/044aadd",
        "content-type": "application/json",
    }
    return Event(topic, payload, headers, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
