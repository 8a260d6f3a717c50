"""Trees of catalog files on disk, for the files provider."""

from __future__ import annotations

from pathlib import Path


def component(name: str, **spec: str) -> str:
    lines = [
        "apiVersion: backstage.io/v1alpha1",
        "kind: Component",
        "metadata:",
        f"  name: {name}",
        "spec:",
        "  type: service",
        "  owner: team-a",
    ]
    lines += [f"  {k}: {v}" for k, v in spec.items()]
    return "\n".join(lines) + "\n"


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_tree(root: Path, teams: int = 12) -> set[str]:
    """``teams`` folders with a service each (and a system beside every third); the refs."""
    refs: set[str] = set()
    for n in range(teams):
        text = component(f"svc-{n:02d}")
        refs.add(f"component:default/svc-{n:02d}")
        if n % 3 == 0:
            text += "---\napiVersion: backstage.io/v1alpha1\nkind: System\n"
            text += f"metadata:\n  name: sys-{n:02d}\n"
            refs.add(f"system:default/sys-{n:02d}")
        write(root, f"team-{n:02d}/catalog-info.yaml", text)
    write(root, "team-03/deep/er/catalog-info.yaml", component("deep-one"))
    refs.add("component:default/deep-one")
    write(root, ".git/catalog-info.yaml", component("hidden-one"))  # hidden: not read
    write(root, "team-04/README.md", "not a catalog file\n")
    return refs
