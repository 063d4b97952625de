"""Cluster names a lead can read: distinctive phrases, no stop words or fragments, no word twice."""

from flywheel.drift import run as drift

BACKGROUND = ["where is my card", "my card was declined", "my account balance", "top up my account"]


def test_a_cluster_is_named_by_its_distinctive_phrases_without_repeats_or_fragments():
    docs = {
        0: [
            "I've asked twice: what is the age limit for my children?",
            "Is there an age limit in the evening? I've got kids",
            "age limit for children accounts, I've heard there is one",
            "What age limit applies in the evening, I've been told none",
        ]
    }
    name = drift.cluster_names(docs, BACKGROUND)[0]
    assert name[0] == "age limit", name
    words = " ".join(name).split()
    assert "ve" not in words and "the" not in words and "is" not in words
    assert len(words) == len(set(words)), f"a word is repeated in {name}"


def test_a_word_in_one_text_only_does_not_name_a_cluster_of_many():
    docs = {0: [f"refund for order {n}" for n in range(9)] + ["refund zanzibar"]}
    name = drift.cluster_names(docs, BACKGROUND)[0]
    assert "zanzibar" not in " ".join(name) and name[0] == "refund order"


def test_a_single_text_cluster_and_an_empty_one_still_get_names():
    names = drift.cluster_names({0: ["virtual card declined"], 1: ["the and of"]}, BACKGROUND)
    assert names[0][0] == "virtual card" or names[0][0] == "card declined"
    assert names[1] == []  # nothing distinctive: the run names it by its number


def test_background_words_score_below_the_clusters_own():
    docs = {0: ["my card exchange rate", "card exchange rate wrong", "exchange rate card today"]}
    name = drift.cluster_names(docs, BACKGROUND * 5)[0]
    assert name[0] == "exchange rate", name


def test_greetings_and_sign_offs_do_not_name_a_cluster():
    docs = {
        0: [
            "Good morning, my disposable card was rejected. Kind regards, the accounts team",
            "Hello, the disposable card got rejected again, thanks. Best regards",
            "Dear support, disposable card rejected at checkout. Regards",
            "Disposable card rejected, pls help, thanks in advance",
        ]
    }
    name = drift.cluster_names(docs, BACKGROUND)[0]
    words = set(" ".join(name).split())
    assert "disposable" in words, name
    assert not words & {"regards", "thanks", "hello", "dear", "pls", "morning"}, name
