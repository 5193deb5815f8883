"""What the encoder reads: handles written as the adapter was trained to read them."""

from __future__ import annotations

import pytest

from services.classify.model.inputs import model_text, without_handles
from services.classify.scoring import Classifier


def test_handles_are_written_as_trained() -> None:
    text = "@AmazonHelp @comcast_cares my order never came, cc @bob"
    assert model_text(text) == text  # None: left as it is
    assert model_text(text, "query: ") == "query: " + text
    assert model_text(text, "", "@user") == "@user @user my order never came, cc @user"


def test_an_email_address_is_not_a_handle() -> None:
    assert model_text("write to care@example.com", "", "@user") == "write to care@example.com"
    assert without_handles("write to care@example.com") == "write to care@example.com"


def test_without_handles_reads_like_a_post_without_mentions() -> None:
    assert without_handles("@AmazonHelp  my order @UPS never came") == "my order never came"
    assert without_handles("@a @b") == ""


def test_the_encoder_tokenizes_what_its_adapter_was_trained_on(
    classifier: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = classifier.encoder
    monkeypatch.setattr(encoder, "handles", "@user")
    (ids,), _ = encoder.tokenize(["@AmazonHelp it broke again"])
    assert ids == encoder.tokenizer.encode(encoder.prefix + "@user it broke again").ids
    monkeypatch.setattr(encoder, "handles", None)
    (raw,), _ = encoder.tokenize(["@AmazonHelp it broke again"])
    assert raw == encoder.tokenizer.encode(encoder.prefix + "@AmazonHelp it broke again").ids
    assert raw != ids
