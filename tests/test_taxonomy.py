"""The failure taxonomy: create, edit with history, merge with labels following, retire, counts."""

import pytest
from labels_support import ANA, DEFINITION, LENA, RAW_ONLY, T0, add_code, known, seed_queue

from flywheel.errors import BadInput, PermissionDenied
from flywheel.labeling.labels import claim_next, record_label
from flywheel.labeling.taxonomy import (
    active_codes,
    check_definition,
    code_counts,
    code_names,
    create_entry,
    edit_entry,
    entry_history,
    example_rows,
    merge_codes,
    resolve_code,
    retire_code,
    taxonomy_entries,
)

OTHER = "The assistant names a charge that is not in the fee schedule. Any invented amount counts."


@pytest.fixture
def labeled_db(db):
    seed_queue(db, 6, batches={1: list(range(6))})
    add_code(db)
    create_entry(db, ANA, "INVENTED_CHARGE", "Invented charge", OTHER)
    for code in ("HALLUCINATED_FEE", "INVENTED_CHARGE", "INVENTED_CHARGE"):
        known(db, LENA, claim_next(db, LENA, now=T0, minutes=10), code=code, now=T0)
    record_label(db, LENA, claim_next(db, LENA, now=T0, minutes=10), "not_a_bug", now=T0)
    return db


def test_merge_moves_the_labels_and_keeps_a_pointer(labeled_db):
    assert merge_codes(labeled_db, ANA, "INVENTED_CHARGE", "HALLUCINATED_FEE") == 2
    codes = [r["code"] for r in labeled_db["labels"].rows_where("kind = 'known'")]
    assert codes == ["HALLUCINATED_FEE"] * 3
    originals = [r["original_code"] for r in labeled_db["labels"].rows_where("kind = 'known'", order_by="id")]
    assert originals == [None, "INVENTED_CHARGE", "INVENTED_CHARGE"]
    merged = labeled_db["taxonomy"].get("INVENTED_CHARGE")
    assert (merged["status"], merged["merged_into"]) == ("merged", "HALLUCINATED_FEE")
    assert resolve_code(labeled_db, "invented_charge") == "HALLUCINATED_FEE"
    assert list(active_codes(labeled_db)) == ["HALLUCINATED_FEE"]
    assert {e["code"]: e["labels"] for e in taxonomy_entries(labeled_db)} == {
        "HALLUCINATED_FEE": 3,
        "INVENTED_CHARGE": 0,
    }
    assert labeled_db["audit_log"].count_where("action = 'merge_code'") == 1


def test_edit_keeps_every_definition_in_the_history(labeled_db):
    edit_entry(
        labeled_db, ANA, "HALLUCINATED_FEE", "A fee is quoted that we never charge. Check the schedule."
    )
    history = entry_history(labeled_db, "HALLUCINATED_FEE")
    assert [(h["change"], h["definition"]) for h in history] == [
        ("created", DEFINITION),
        ("edited", "A fee is quoted that we never charge. Check the schedule."),
    ]
    assert labeled_db["taxonomy"].get("HALLUCINATED_FEE")["definition"].startswith("A fee is quoted")


def test_retired_codes_take_no_new_labels(labeled_db):
    retire_code(labeled_db, ANA, "INVENTED_CHARGE")
    with pytest.raises(BadInput, match="retired"):
        known(
            labeled_db, LENA, claim_next(labeled_db, LENA, now=T0, minutes=10), code="INVENTED_CHARGE", now=T0
        )
    with pytest.raises(BadInput, match="only active"):
        merge_codes(labeled_db, ANA, "INVENTED_CHARGE", "HALLUCINATED_FEE")
    # a table of old labels still names the retired code
    assert "INVENTED_CHARGE" not in active_codes(labeled_db) and "INVENTED_CHARGE" in code_names(labeled_db)


def test_only_leads_edit_the_taxonomy(labeled_db):
    for change in (
        lambda: edit_entry(labeled_db, LENA, "HALLUCINATED_FEE", OTHER),
        lambda: merge_codes(labeled_db, LENA, "INVENTED_CHARGE", "HALLUCINATED_FEE"),
        lambda: retire_code(labeled_db, LENA, "INVENTED_CHARGE"),
        lambda: create_entry(labeled_db, LENA, "SOME_CODE", "Some code", OTHER),
    ):
        with pytest.raises(PermissionDenied):
            change()
    assert labeled_db["taxonomy_history"].count == 2


def test_counts_and_examples_show_scrubbed_text_only(labeled_db):
    counts = code_counts(labeled_db)
    assert counts.groupby("code")["labels"].sum().to_dict() == {"HALLUCINATED_FEE": 1, "INVENTED_CHARGE": 2}
    rows = example_rows(labeled_db, LENA, "INVENTED_CHARGE")
    assert len(rows) == 2 and all("[PERSON]" in r["scrubbed_input"] for r in rows)
    outputs = [
        rows,
        taxonomy_entries(labeled_db),
        counts.to_dict(),
        entry_history(labeled_db, "INVENTED_CHARGE"),
    ]
    assert RAW_ONLY not in repr(outputs)


@pytest.mark.parametrize(
    "definition",
    ["One sentence only.", "No full stop at all", "One. Two. Three. Four.", "x. " * 300],
)
def test_a_definition_is_two_or_three_sentences(definition):
    with pytest.raises(BadInput, match="two sentences"):
        check_definition(definition)


def test_abbreviations_do_not_end_a_sentence():
    assert check_definition("It quotes a fee, e.g. a card fee. It is not in the schedule.")
