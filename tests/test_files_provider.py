"""The catalog files provider over real directories, on SQLite and Postgres."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ingestion import IncrementalIngestion, ProviderConfigError
from ingestion.store import ErrorKind
from providers.files import LOCATION_ANNOTATION, FilesProvider, catalog_files
from tests.support.ingestions import burst_error, make_ingestion, one_burst
from tests.support.trees import component, make_tree, write


def files(root: Path, **kwargs: object) -> FilesProvider:
    return FilesProvider("catalog", root, **kwargs)  # type: ignore[arg-type]


# -- reading ------------------------------------------------------------------------------


def test_a_cycle_reads_every_catalog_file_a_group_of_files_a_page(
    database_url: str, tmp_path: Path
) -> None:
    # Given 13 catalog files, some with two documents, read 4 files a page, a page a burst
    root = tmp_path / "catalog"
    refs = make_tree(root)
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(files(root, files_per_page=4), burst_length=0.001, burst_interval=0)

    # When a cycle runs
    reports = ingestion.run_cycle("catalog")

    # Then it took 4 pages and the catalog holds every entity of every file
    assert sum(r.pages for r in reports) == 4
    assert set(ingestion.catalog.refs("catalog")) == refs
    assert ingestion.errors("catalog") == []
    entity = ingestion.catalog.get("component:default/deep-one")
    assert entity is not None
    location = f"file:{root.resolve() / 'team-03/deep/er/catalog-info.yaml'}"
    assert entity.location_key == location
    assert entity.entity["metadata"]["annotations"][LOCATION_ANNOTATION] == location


def test_files_come_in_path_order_and_resume_after_the_cursor(tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    make_tree(root)
    write(root, "team-05/catalog-info.yaml.bak", "not matched")
    everything = list(catalog_files(root, "catalog-info.yaml"))
    expected = sorted(
        p.relative_to(root).parts
        for p in root.rglob("catalog-info.yaml")
        if not p.relative_to(root).parts[0].startswith(".")
    )
    assert everything == expected
    assert ("team-03", "catalog-info.yaml") < ("team-03", "deep", "er", "catalog-info.yaml")

    # A cursor inside the tree, even at a file deleted since, resumes right after it
    cut = ("team-03", "deep", "er", "catalog-info.yaml")
    shutil.rmtree(root / "team-03" / "deep")
    rest = list(catalog_files(root, "catalog-info.yaml", cut))
    assert rest == [p for p in expected if p > cut]
    assert rest[0] == ("team-04", "catalog-info.yaml")


def test_multi_document_files_keep_dates_as_text_and_skip_empty_documents(
    tmp_path: Path,
) -> None:
    root = tmp_path / "catalog"
    write(root, "catalog-info.yaml", "---\n" + component("a", since="2024-01-31") + "---\n---\n")
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    ingestion.add_provider(files(root))
    ingestion.run_cycle("catalog")
    entity = ingestion.catalog.get("component:default/a")
    assert entity is not None and entity.entity["spec"]["since"] == "2024-01-31"


# -- bad files ----------------------------------------------------------------------------


def test_a_file_that_does_not_parse_is_an_error_naming_file_and_line_and_the_rest_ingest(
    database_url: str, tmp_path: Path
) -> None:
    # Given a tree where one file is broken on its 11th line, in its second document
    root = tmp_path / "catalog"
    refs = make_tree(root, teams=6)
    broken = component("fine-before-the-break") + "---\nkind: System\nmetadata:\n  name: a: b\n"
    broken += "spec: {}\n"
    write(root, "team-02/catalog-info.yaml", broken)
    refs.discard("component:default/svc-02")
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(files(root, files_per_page=3))

    # When a cycle runs
    reports = ingestion.run_cycle("catalog")

    # Then the file is one error record saying where; nothing of it is ingested; the rest is
    assert reports[-1].outcome == "done"
    assert set(ingestion.catalog.refs("catalog")) == refs
    [error] = ingestion.errors("catalog")
    assert error["kind"] == ErrorKind.ENTITY.value
    assert error["entity"] == "team-02/catalog-info.yaml"
    assert error["rule"] == "yaml"
    assert (
        "team-02/catalog-info.yaml: line 11, column 10: YAML error: mapping values are not allowed"
        in (error["message"])
    )
    assert error["message"].startswith("provider 'catalog', page 1, ")


def test_documents_that_are_no_valid_entity_are_rejected_naming_file_document_and_line(
    tmp_path: Path,
) -> None:
    root = tmp_path / "catalog"
    text = component("good") + "---\n- a list\n---\n" + component("Bad Name")
    write(root, "x/catalog-info.yaml", text)
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    ingestion.add_provider(files(root))
    ingestion.run_cycle("catalog")
    assert list(ingestion.catalog.refs("catalog")) == ["component:default/good"]
    messages = {e["rule"]: e["message"] for e in ingestion.errors("catalog")}
    assert messages["entity"].endswith(
        "x/catalog-info.yaml: document 2 (line 9) is a list, not an entity"
    )
    assert (
        "x/catalog-info.yaml: document 3 (line 11): metadata.name 'Bad Name' must be"
        in (messages["metadata.name"])
    )


@pytest.mark.parametrize("field", ["labels", "annotations"])
def test_an_empty_labels_or_annotations_key_is_rejected_naming_file_and_field(
    field: str, tmp_path: Path
) -> None:
    # Given a file whose metadata has an empty key (null in YAML, not the mapping Backstage
    # requires) next to a file that is fine
    root = tmp_path / "catalog"
    empty = component("empty").replace("  name: empty\n", f"  name: empty\n  {field}:\n")
    write(root, "a/catalog-info.yaml", empty)
    write(root, "b/catalog-info.yaml", component("fine"))
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    ingestion.add_provider(files(root))

    # When a cycle reads them
    ingestion.run_cycle("catalog")

    # Then the file is an error record naming the file, the document and the field; the
    # other file ingests
    assert list(ingestion.catalog.refs("catalog")) == ["component:default/fine"]
    [error] = ingestion.errors("catalog")
    assert (error["entity"], error["rule"]) == ("a/catalog-info.yaml", f"metadata.{field}")
    assert f"document 1 (line 1): metadata.{field} None must be a mapping" in error["message"]


def test_a_file_too_large_or_not_utf8_is_rejected_alone(tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    write(root, "a/catalog-info.yaml", component("a") + "#" * 2000 + "\n")
    (root / "b").mkdir()
    (root / "b" / "catalog-info.yaml").write_bytes(b"name: \xff\xfe\n")
    write(root, "c/catalog-info.yaml", component("c"))
    ingestion = make_ingestion(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    ingestion.migrate()
    ingestion.add_provider(files(root, max_file_bytes=1000))
    ingestion.run_cycle("catalog")
    assert list(ingestion.catalog.refs("catalog")) == ["component:default/c"]
    rules = {e["entity"]: (e["rule"], e["message"]) for e in ingestion.errors("catalog")}
    assert rules["a/catalog-info.yaml"][0] == "size"
    assert "above the 1000 byte limit" in rules["a/catalog-info.yaml"][1]
    assert rules["b/catalog-info.yaml"][0] == "encoding"


# -- deletions and a missing directory ----------------------------------------------------


def test_a_second_cycle_after_files_are_deleted_sweeps_their_entities(
    database_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "catalog"
    refs = make_tree(root)
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(files(root, files_per_page=5))
    ingestion.run_cycle("catalog")
    assert set(ingestion.catalog.refs("catalog")) == refs

    (root / "team-06" / "catalog-info.yaml").unlink()  # svc-06 and sys-06
    shutil.rmtree(root / "team-03" / "deep")
    reports = ingestion.run_cycle("catalog")

    remaining = refs - {
        "component:default/svc-06",
        "system:default/sys-06",
        "component:default/deep-one",
    }
    assert set(ingestion.catalog.refs("catalog")) == remaining
    assert reports[-1].sweep is not None and reports[-1].sweep.removed == 3


def test_a_missing_directory_fails_the_burst_and_sweeps_nothing(
    database_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "catalog"
    refs = make_tree(root, teams=4)
    ingestion: IncrementalIngestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(files(root), backoff=[60])
    ingestion.run_cycle("catalog")

    shutil.rmtree(root)
    report = one_burst(ingestion, "catalog")

    assert report.outcome == "failed"
    assert f"the catalog directory {root.resolve()} does not exist" in burst_error(
        ingestion, "catalog"
    )
    assert set(ingestion.catalog.refs("catalog")) == refs


def test_files_per_page_must_be_positive() -> None:
    with pytest.raises(ProviderConfigError, match="files_per_page must be at least 1"):
        FilesProvider("catalog", ".", files_per_page=0)


def test_entities_of_a_file_that_stops_parsing_are_kept_until_it_parses_again(
    database_url: str, tmp_path: Path
) -> None:
    # Given a catalog ingested once
    root = tmp_path / "catalog"
    refs = make_tree(root, teams=4)
    ingestion = make_ingestion(database_url, tmp_path)
    ingestion.add_provider(files(root, files_per_page=2))
    ingestion.run_cycle("catalog")
    assert set(ingestion.catalog.refs("catalog")) == refs

    # When one file breaks and a cycle runs
    path = root / "team-01/catalog-info.yaml"
    good = path.read_text()
    path.write_text(good + "spec: [unclosed\n")
    reports = ingestion.run_cycle("catalog")

    # Then its entity is reported, not swept; once it parses again the catalog follows it
    assert reports[-1].sweep is not None and reports[-1].sweep.removed == 0
    assert set(ingestion.catalog.refs("catalog")) == refs
    assert [e["rule"] for e in ingestion.errors("catalog")] == ["yaml"]
    path.unlink()
    ingestion.run_cycle("catalog")
    assert set(ingestion.catalog.refs("catalog")) == refs - {"component:default/svc-01"}
