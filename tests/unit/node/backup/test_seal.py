"""zstd + age sealing: round trip, and every way a sealed chunk or a key can be wrong."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pyrage
import pytest
import zstandard

from node.backup import seal


@pytest.fixture
def keypair(tmp_path: pathlib.Path) -> tuple[pathlib.Path, str]:
    secret, public = seal.generate_identity()
    path = tmp_path / "key.txt"
    path.write_text(f"# a comment\n\n{secret}\n")
    return path, public


def test_round_trip_and_compression(keypair: tuple[pathlib.Path, str]) -> None:
    path, public = keypair
    plain = b"tadpole " * 10_000
    sealed = seal.seal(plain, [seal.parse_recipient(public)])
    assert sealed.startswith(b"age-encryption.org/v1\n")
    assert len(sealed) < len(plain) // 20  # zstd did its work before encryption
    assert seal.unseal(sealed, seal.load_identities(str(path)), max_size=len(plain)) == plain


def test_any_of_several_recipients_opens_it(tmp_path: pathlib.Path) -> None:
    pairs = [seal.generate_identity() for _ in range(2)]
    sealed = seal.seal(b"data", [seal.parse_recipient(p) for _, p in pairs])
    for i, (secret, _) in enumerate(pairs):
        f = tmp_path / f"k{i}"
        f.write_text(secret + "\n")
        assert seal.unseal(sealed, seal.load_identities(str(f)), max_size=4) == b"data"


def test_wrong_key_flipped_byte_truncation_and_bombs_fail(
    keypair: tuple[pathlib.Path, str], tmp_path: pathlib.Path
) -> None:
    path, public = keypair
    plain = b"x" * 5000
    sealed = seal.seal(plain, [seal.parse_recipient(public)])
    ids = seal.load_identities(str(path))
    other = tmp_path / "other"
    other.write_text(seal.generate_identity()[0] + "\n")
    with pytest.raises(seal.SealError, match="does not decrypt"):
        seal.unseal(sealed, seal.load_identities(str(other)), max_size=5000)
    flipped = bytearray(sealed)
    flipped[-3] ^= 0x01
    with pytest.raises(seal.SealError, match="does not decrypt"):
        seal.unseal(bytes(flipped), ids, max_size=5000)
    with pytest.raises(seal.SealError, match="does not decrypt"):
        seal.unseal(sealed[:-20], ids, max_size=5000)
    with pytest.raises(seal.SealError, match="inflates to 5000 bytes"):
        seal.unseal(sealed, ids, max_size=100)


def test_a_frame_without_a_content_size_is_bounded_too(keypair: tuple[pathlib.Path, str]) -> None:
    path, public = keypair
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"y" * 5000)
    sealed = pyrage.encrypt(frame, [seal.parse_recipient(public)])
    with pytest.raises(seal.SealError):
        seal.unseal(sealed, seal.load_identities(str(path)), max_size=100)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("age1notakey", "not a valid key"),
        ("AGE-SECRET-KEY-1ABC", "expected an age public key"),
        ("", "expected an age public key"),
    ],
)
def test_bad_recipients_are_named(text: str, problem: str) -> None:
    with pytest.raises(seal.SealError, match=problem):
        seal.parse_recipient(text)


def test_a_bad_identity_file_is_named_without_echoing_the_key(tmp_path: pathlib.Path) -> None:
    secret, _ = seal.generate_identity()
    typo = secret[:-3] + "QQQ"
    f = tmp_path / "bad"
    f.write_text(f"# comment\n{typo}\n")
    with pytest.raises(seal.SealError, match=r"bad, line 2: not an age secret key") as info:
        seal.load_identities(str(f))
    assert typo not in str(info.value) and typo[20:40] not in repr(info.value.__cause__)
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(seal.SealError, match="holds no key"):
        seal.load_identities(str(empty))
    with pytest.raises(seal.SealError, match="missing"):
        seal.load_identities(str(tmp_path / "missing"))
    with pytest.raises(seal.SealError, match="no recipient"):
        seal.seal(b"x", [])


@pytest.mark.skipif(shutil.which("age") is None, reason="age not installed (make system-deps)")
def test_the_age_cli_opens_a_sealed_chunk(keypair: tuple[pathlib.Path, str]) -> None:
    """Interoperability: the stored bytes are a plain age file holding a zstd frame."""
    path, public = keypair
    sealed = seal.seal(b"opened by the real age tool", [seal.parse_recipient(public)])
    out = subprocess.run(
        ["age", "--decrypt", "--identity", str(path)], input=sealed, capture_output=True, check=True
    )
    assert zstandard.ZstdDecompressor().decompress(out.stdout) == b"opened by the real age tool"
