"""One rule for model names and sizes, wherever an operator gives them: an account's models, a
key's allowed models and sizes, a price. They show in tables and metrics labels."""

from __future__ import annotations

import pytest

from relay.accounts import AccountInputError, validate_models
from relay.limits import LimitInputError, Limits, validate_limits
from relay.pricing import PriceInputError, validate_price

BAD_MODELS = ["a b", "q\x1b[2J", "-sora", "", "m" * 129, "sora\n2"]
GOOD_MODELS = ["sora-2", "veo-3.1-generate-preview", "models/veo-3.0", "fal-ai/kling-video/v2.1/pro/image-to-video", "m" * 128]


@pytest.mark.parametrize("model", BAD_MODELS)
def test_a_model_name_is_refused_alike_everywhere(model: str) -> None:
    with pytest.raises(AccountInputError):
        validate_models([model])
    with pytest.raises(LimitInputError):
        validate_limits(Limits(models=(model,)))
    with pytest.raises(PriceInputError):
        validate_price(model, "1280x720", 0.1)


@pytest.mark.parametrize("model", GOOD_MODELS)
def test_a_model_name_is_accepted_alike_everywhere(model: str) -> None:
    assert validate_models([model]) == (model,)
    assert validate_limits(Limits(models=(model,))).models == (model,)
    assert validate_price(model, "1280x720", 0.1)[0] == model


@pytest.mark.parametrize("size", ["0x0", "0x720", "1280x0", "01280x720", "1280X720", "x720", "123456x1"])
def test_a_size_names_a_frame(size: str) -> None:
    with pytest.raises(LimitInputError):
        validate_limits(Limits(sizes=(size,)))
    with pytest.raises(PriceInputError):
        validate_price("sora-2", size, 0.1)


def test_sizes_that_name_frames_are_accepted() -> None:
    assert validate_limits(Limits(sizes=("1280x720", "720x1280", "1x1", "99999x99999"))).sizes is not None
    assert validate_price("sora-2", "*", 0.1)[1] == "*"
