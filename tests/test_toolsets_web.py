"""The guarded fetcher and the address rule under it, against real pages of a fake server on
127.0.0.1 (tests/support/fake_web.py): which URLs are refused and why (scheme, private
addresses, names resolving to them, each redirect hop, types, sizes), which fail (status, time,
network), and what a fetched page holds (main text without the boilerplate, PDF text, title).

The fake runs on 127.0.0.1, so fetchers reach it through ``allow_hosts=["127.0.0.1:<port>"]``;
the refusals use other private addresses, other ports, or names, which that entry does not allow."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trafilatura

from opentess import netguard
from opentess.toolsets.web import Fetcher, FetchFailed, FetchRefused, Page
from tests.support.fake_web import ARTICLE_FACT, BOILERPLATE, PDF_FACT, TEXT_FACT, FakeWeb
from tests.support.processes import free_port
from tests.support.tls import self_signed


@pytest.fixture(scope="module")
def web() -> Iterator[FakeWeb]:
    server = FakeWeb().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh(web: FakeWeb) -> None:
    web.reset()


def fetch(url: str, **options: Any) -> Page:
    async def go() -> Page:
        fetcher = Fetcher(**options)
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


# the address rule ---------------------------------------------------------------------------------


def test_which_addresses_are_public() -> None:
    """Only globally routable addresses, IPv4 reached through IPv6 (mapped, NAT64, 6to4) included."""
    refused = [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
        "224.0.0.1", "240.0.0.1", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254",
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a00:1::", "::7f00:1",
    ]  # fmt: skip
    for text in refused:
        assert netguard.forbidden(ipaddress.ip_address(text)) is not None, text
    assert "link-local" in (netguard.forbidden(ipaddress.ip_address("::ffff:169.254.169.254")) or "")
    assert "shared" in (netguard.forbidden(ipaddress.ip_address("100.64.0.1")) or "")
    for text in ("93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"):
        assert netguard.forbidden(ipaddress.ip_address(text)) is None, text


def test_parsing_urls_and_the_allow_list() -> None:
    """An entry allows a host on any port, or on one port; http is fine for fetching, and only
    https may be required (webhooks) — the error naming the setting of the caller."""
    allow = ["Intranet.example", "127.0.0.1:9000", "[::1]"]
    assert netguard.parse("http://intranet.example:8080/x", allow).allowed
    assert netguard.parse("http://127.0.0.1:9000/x", allow).allowed
    assert not netguard.parse("http://127.0.0.1:9001/x", allow).allowed  # another port
    assert netguard.parse("http://[::1]:8080/x", allow).allowed
    target = netguard.parse("https://Example.com:8443/a/b?c=d#frag", [])
    assert (target.host_header, target.path, target.url, target.allowed) == (
        "example.com:8443", "/a/b?c=d", "https://example.com:8443/a/b?c=d", False)  # fmt: skip
    assert netguard.parse("http://bücher.example/", []).host == "xn--bcher-kva.example"
    with pytest.raises(netguard.Refused, match="http only for hosts in OPENTESS_WEBHOOK_ALLOW_HOSTS"):
        netguard.parse("http://example.com/", [], "OPENTESS_WEBHOOK_ALLOW_HOSTS", require_https=True)
    bad_urls = [
        ("ftp://example.com/", "http"), ("http://user:pw@example.com/", "credentials"),
        ("http://example.com:99999/", "port"), ("http://exa mple.com/", "spaces"), ("", "empty"),
    ]  # fmt: skip
    for bad, why in bad_urls:
        with pytest.raises(netguard.Refused, match=why):
            netguard.parse(bad, [])


def test_checked_addresses_refuse_a_name_that_resolves_to_a_private_address() -> None:
    """DNS rebinding: the name is judged by what it resolves to now; the error names the setting."""

    async def check(setting: str) -> list[netguard.Address]:
        return await netguard.checked_addresses(netguard.parse("http://localhost:8080/", []), setting)

    with pytest.raises(netguard.Refused, match=r"localhost resolves to (127\.0\.0\.1|::1), a loopback .*SOME_SETTING"):
        asyncio.run(check("SOME_SETTING"))

    async def allowed() -> list[netguard.Address]:
        return await netguard.checked_addresses(netguard.parse("http://localhost:8080/", ["localhost"]))

    assert all(ip.is_loopback for ip in asyncio.run(allowed()))


# pages ----------------------------------------------------------------------------------------------


def test_an_article_is_its_main_text_and_title_without_the_boilerplate(web: FakeWeb) -> None:
    page = fetch(web.page("/article"), allow_hosts=web.allow)
    assert page.url == page.final_url == web.page("/article")
    assert page.title == "The Lighthouse of Alexandria"
    assert ARTICLE_FACT in page.text and "Citadel of Qaitbay" in page.text
    for noise in BOILERPLATE:
        assert noise not in page.text, noise
    assert page.content_type.startswith("text/html") and page.bytes > 1000 and not page.truncated
    [sent] = web.received("/article")
    assert sent.headers["Host"] == f"127.0.0.1:{web.port}"
    assert sent.headers["Accept-Encoding"] == "gzip, deflate"
    assert "opentess" in sent.headers["User-Agent"]


def test_pdf_text_and_plain_text_and_declared_charsets(web: FakeWeb) -> None:
    pdf = fetch(web.page("/report.pdf"), allow_hosts=web.allow)
    assert PDF_FACT in pdf.text and pdf.title == "Lighthouse maintenance" and pdf.content_type == "application/pdf"
    notes = fetch(web.page("/notes.txt"), allow_hosts=web.allow)
    assert notes.text.startswith(TEXT_FACT) and notes.title == TEXT_FACT
    latin1 = fetch(web.page("/latin1"), allow_hosts=web.allow)
    assert "Le café du phare" in latin1.text and latin1.title == "Café"


def test_a_body_served_as_bytes_of_no_kind_is_sniffed(web: FakeWeb) -> None:
    """application/octet-stream that starts as HTML is read as HTML."""
    page = fetch(web.page("/untyped"), allow_hosts=web.allow)
    assert ARTICLE_FACT in page.text and page.content_type == "text/html"


def test_the_text_is_cut_at_max_chars(web: FakeWeb) -> None:
    page = fetch(web.page("/notes.txt"), allow_hosts=web.allow, max_chars=20)
    assert page.text == TEXT_FACT[:20] and page.truncated


def test_extraction_runs_in_the_fetchers_threads(web: FakeWeb, monkeypatch: pytest.MonkeyPatch) -> None:
    """Extraction is CPU work: it never runs on the event loop's thread."""
    threads: list[str] = []
    original = trafilatura.extract

    def extract(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(trafilatura, "extract", extract)
    page = fetch(web.page("/article"), allow_hosts=web.allow)
    assert ARTICLE_FACT in page.text
    assert len(threads) == 1 and threads[0].startswith("opentess-extract") and threads[0] != "MainThread"


# refusals ------------------------------------------------------------------------------------------


def test_the_fake_itself_is_refused_unless_allowed(web: FakeWeb) -> None:
    """127.0.0.1 is loopback: refused before any connection, unless its host:port is listed."""
    with pytest.raises(FetchRefused, match=r"127\.0\.0\.1 is a loopback address.*OPENTESS_FETCH_ALLOW_HOSTS"):
        fetch(web.page("/article"))
    with pytest.raises(FetchRefused, match="loopback"):
        fetch(web.page("/article"), allow_hosts=[f"127.0.0.1:{web.port + 1}"])  # another port
    assert web.received() == []


def test_a_name_resolving_to_a_private_address_is_refused(web: FakeWeb) -> None:
    """DNS rebinding: ``localhost`` is not the allowed 127.0.0.1:port, and it resolves to loopback."""
    with pytest.raises(FetchRefused, match=r"localhost resolves to .*a loopback address"):
        fetch(f"http://localhost:{web.port}/article", allow_hosts=web.allow, setting="MY_ALLOW_HOSTS")
    assert web.received() == []


def test_an_allowed_name_is_connected_to_at_its_checked_address_under_its_name(web: FakeWeb) -> None:
    page = fetch(f"http://localhost:{web.port}/host", allow_hosts=[f"localhost:{web.port}"])
    assert page.text == f"Host: localhost:{web.port}"


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
     "http://100.64.0.1/", "http://0.0.0.0/", "http://[fd00:ec2::254]/", "http://192.168.1.1:8080/admin"],
)  # fmt: skip
def test_private_addresses_are_refused(web: FakeWeb, url: str) -> None:
    with pytest.raises(FetchRefused, match=r"may not be fetched: .* address"):
        fetch(url, allow_hosts=web.allow)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/file.txt", "javascript:alert(1)", "gopher://example.com/", "/relative"],
)
def test_only_http_and_https_urls_are_fetched(url: str) -> None:
    with pytest.raises(FetchRefused, match=r"absolute http\(s\) URL"):
        fetch(url)


@pytest.mark.parametrize(
    "to", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "LOCALHOST", "file:///etc/passwd"]
)
def test_every_redirect_hop_is_checked(web: FakeWeb, to: str) -> None:
    """A public-looking first hop cannot lead the fetcher to the metadata endpoint, a private
    network, a name resolving to loopback, or another scheme."""
    target = f"http://localhost:{web.port}/article" if to == "LOCALHOST" else to
    with pytest.raises(FetchRefused, match=r"redirects to .*, which may not be fetched"):
        fetch(web.redirect(target), allow_hosts=web.allow)
    assert [r.path for r in web.received()] == ["/redirect"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_followed_by_the_fetcher(web: FakeWeb, status: int) -> None:
    page = fetch(web.redirect("/chain/2", status), allow_hosts=web.allow)
    assert page.url == web.redirect("/chain/2", status) and page.final_url == web.page("/article")
    assert ARTICLE_FACT in page.text
    assert [r.path for r in web.received()] == ["/redirect", "/chain/2", "/chain/1", "/article"]


def test_a_redirect_chain_longer_than_allowed_fails(web: FakeWeb) -> None:
    with pytest.raises(FetchFailed, match="more than 2 redirects"):
        fetch(web.page("/chain/3"), allow_hosts=web.allow, max_redirects=2)
    assert [r.path for r in web.received()] == ["/chain/3", "/chain/2", "/chain/1"]


@pytest.mark.parametrize(("path", "kind"), [("/image.png", "image/png"), ("/data.json", "application/json")])
def test_types_other_than_html_text_and_pdf_are_refused(web: FakeWeb, path: str, kind: str) -> None:
    with pytest.raises(FetchRefused, match=f"is {kind}, which is not read"):
        fetch(web.page(path), allow_hosts=web.allow)


# sizes and time -------------------------------------------------------------------------------------


def test_a_huge_page_keeps_its_first_max_bytes(web: FakeWeb) -> None:
    page = fetch(web.page("/huge"), allow_hosts=web.allow, max_bytes=100_000)
    assert page.truncated and page.bytes == 100_000
    assert ARTICLE_FACT in page.text


def test_a_page_cut_inside_a_character_loses_only_that_character(web: FakeWeb) -> None:
    page = fetch(web.page("/accents.txt"), allow_hosts=web.allow, max_bytes=1001)
    assert page.truncated and page.text == "é" * 500


def test_a_compression_bomb_is_cut_at_max_bytes_decompressed(web: FakeWeb) -> None:
    page = fetch(web.page("/bomb"), allow_hosts=web.allow, max_bytes=200_000)
    assert page.truncated and page.bytes == 200_000


@pytest.mark.parametrize("path", ["/huge.pdf", "/huge-stream.pdf"])
def test_a_pdf_larger_than_max_bytes_is_refused(web: FakeWeb, path: str) -> None:
    """Declared (Content-Length) or found while streaming: a PDF cut short cannot be read."""
    with pytest.raises(FetchRefused, match="is a PDF larger than 100,000 bytes"):
        fetch(web.page(path), allow_hosts=web.allow, max_bytes=100_000)


@pytest.mark.parametrize("path", ["/slow", "/drip"])
def test_a_slow_page_ends_in_fetch_failed(web: FakeWeb, path: str) -> None:
    """The whole fetch is bounded: a server that never answers, and one that answers a few
    bytes at a time forever (each read well within any per-read timeout)."""
    with pytest.raises(FetchFailed, match=r"no (complete )?answer within 0.5 s"):
        fetch(web.page(path), allow_hosts=web.allow, timeout_s=0.5)


# failures -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 500])
def test_an_error_status_fails(web: FakeWeb, status: int) -> None:
    with pytest.raises(FetchFailed, match=f"HTTP {status}"):
        fetch(web.page(f"/status/{status}"), allow_hosts=web.allow)


def test_a_closed_port_and_an_unknown_name_fail() -> None:
    with pytest.raises(FetchFailed, match="ConnectError"):
        fetch(f"http://127.0.0.1:{free_port()}/", allow_hosts=["127.0.0.1"])
    with pytest.raises(FetchFailed, match="could not be resolved"):
        fetch("http://no-such-host.invalid/")


# https --------------------------------------------------------------------------------------------


def test_https_is_verified_for_the_urls_name_at_the_checked_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS (SNI and the certificate check) speaks of the URL's name while the connection goes to
    the address it resolved to: a certificate for localhost passes for https://localhost and is
    refused for the same server called by its address."""
    cert, key = self_signed(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the fetcher trusts this server's certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with FakeWeb(tls=tls).start() as server:
        allow = [f"localhost:{server.port}", f"127.0.0.1:{server.port}"]
        page = fetch(f"https://localhost:{server.port}/host", allow_hosts=allow)
        assert page.text == f"Host: localhost:{server.port}"
        with pytest.raises(FetchFailed, match="CERTIFICATE_VERIFY_FAILED"):
            fetch(f"https://127.0.0.1:{server.port}/host", allow_hosts=allow)
