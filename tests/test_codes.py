import string

from hypothesis import given
from hypothesis import strategies as st

from service.codes import ALPHABET, CODE_LEN, ID_LEN, Signer, campaign_warnings, channel_of, utm_problems

SIGNER = Signer(["key-one-0123456789abcdef"])


def test_minted_codes_verify_and_look_right() -> None:
    codes = {SIGNER.mint() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert 8 <= len(code) <= 16
        assert set(code) <= set(string.ascii_letters + string.digits)
        assert SIGNER.verify(code)


IDENTS = st.text(alphabet=ALPHABET, min_size=ID_LEN, max_size=ID_LEN)


@given(IDENTS, st.data())
def test_any_single_character_change_is_refused(ident: str, data: st.DataObject) -> None:
    code = SIGNER.sign(ident)
    assert SIGNER.verify(code)
    pos = data.draw(st.integers(0, CODE_LEN - 1))
    new = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != code[pos]))
    assert not SIGNER.verify(code[:pos] + new + code[pos + 1 :])


@given(st.text(max_size=20))
def test_arbitrary_text_is_refused(text: str) -> None:
    assert not SIGNER.verify(text)


def test_rotation_first_key_signs_all_verify() -> None:
    old = Signer(["old-key-0123456789abcdef"])
    rotated = Signer(["new-key-0123456789abcdef", "old-key-0123456789abcdef"])
    old_code = old.mint()
    assert rotated.verify(old_code)
    assert not old.verify(rotated.mint())
    assert not Signer(["new-key-0123456789abcdef"]).verify(old_code)


def test_utm_rules_name_each_bad_field() -> None:
    problems = utm_problems({
        "utm_source": "has space", "utm_medium": "", "utm_campaign": "x" * 51,
        "utm_content": "ok", "utm_term": "é",
    })
    assert set(problems) == {"utm_source", "utm_medium", "utm_campaign", "utm_term"}
    longest = {"utm_source": "ig", "utm_medium": "m", "utm_campaign": "c" * 50, "utm_content": "x" * 100}
    assert utm_problems(longest) == {}
    assert utm_problems({"utm_source": "ig"}).keys() == {"utm_medium", "utm_campaign", "utm_content"}
    assert "utm_content" in utm_problems({**dict.fromkeys(("utm_source", "utm_medium", "utm_campaign"), "a"),
                                          "utm_content": "y" * 101})


def test_channels_and_aliases() -> None:
    assert channel_of("ig") == "instagram"
    assert channel_of("Instagram") == "instagram"
    assert channel_of("fb") == "facebook"
    assert channel_of("tt") == "tiktok"
    assert channel_of("vk") == "vk"
    assert channel_of("twitter") == "x"
    assert channel_of("newsletter") == "email"
    assert channel_of("myblog") == "other"


def test_campaign_advice() -> None:
    assert campaign_warnings("ig_202405_kd_summer_sale") == []
    assert len(campaign_warnings("test")) == 2
    assert len(campaign_warnings("promo1")) == 2
    assert len(campaign_warnings("summer-sale")) == 1
    assert campaign_warnings("ig_202413_theme")  # no 13th month
