"""The web page of `shapesearch serve`, in a real headless Chromium against the real server.

Submits a small image through the form, follows the job row to SUCCEEDED, opens the job page and
checks the images, the result and the downloads; a bad ε shows the server's 422 detail. With
SHAPESEARCH_SCREENSHOT set, saves the finished job page to benchmarks/results/service_page.png.
"""

from __future__ import annotations

import os
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from .browser import REPO, browser, page, service  # noqa: F401 - pytest fixtures
from .conftest import smooth_image

FINISHED = ("SUCCEEDED", "FAILED", "STOPPED")
JOB_TIMEOUT_MS = 120_000
SCREENSHOT = REPO / "benchmarks" / "results" / "service_page.png"


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "blobs.png"
    Image.fromarray((smooth_image(48, 64, 3) * 255).round().astype(np.uint8), "RGB").save(path)
    return path


def _fail(msg, svc, tab):
    pytest.fail(f"{msg}\npage errors: {tab.log.unexpected()}\nserver log:\n{svc.log()}")


def _submit(tab, png, eps: str, generations: str = "") -> None:
    tab.set_input_files("#file", str(png))
    tab.fill("#eps", eps)
    tab.fill("#generations", generations)
    tab.click("#submit-form button[type=submit]")


def _submitted(tab, svc) -> str:
    """The id of the job just submitted through the form (its row is shown)."""
    try:
        tab.wait_for_selector("#notice a", timeout=15_000)
    except Exception:  # noqa: BLE001
        _fail(f"no job after submitting (#error: {tab.text_content('#error')!r})", svc, tab)
    assert tab.text_content("#error").strip() == ""
    job_id = tab.get_attribute("#notice a", "href").rsplit("/", 1)[-1]
    tab.wait_for_selector(f"#jobs tr.job[data-id='{job_id}']")
    return job_id


def _images_loaded(tab) -> None:
    tab.wait_for_function(
        """() => ['#original', '#reconstruction', '#convergence'].every(s => {
                   const img = document.querySelector(s);
                   return img && img.complete && img.naturalWidth > 0; })""", timeout=30_000)


def test_page_runs_an_image_job(service, page, png):  # noqa: F811 - fixtures from .browser
    page.goto(service.page_url())
    page.wait_for_selector("#submit-form")
    assert page.is_hidden("#job")
    assert page.input_value("#eps") == "0.1"

    # a bad ε: the server's 422 detail line appears in #error and no job is made
    before = len(service.get_json("/api/jobs"))
    _submit(page, png, "2")
    page.wait_for_function("() => document.querySelector('#error').textContent.trim().length > 0")
    detail = page.text_content("#error")
    assert "eps" in detail.lower(), detail
    assert "422" in detail, detail
    assert len(service.get_json("/api/jobs")) == before

    # a good job: its row appears and reaches SUCCEEDED
    _submit(page, png, "0.1", "3")
    job_id = _submitted(page, service)
    row = f"#jobs tr.job[data-id='{job_id}']"
    try:
        state = page.wait_for_function(
            f"""() => {{ const s = document.querySelector("{row} .state");
                      return s && {list(FINISHED)!r}.includes(s.textContent.trim()) && s.textContent.trim(); }}""",
            timeout=JOB_TIMEOUT_MS).json_value()
    except Exception:  # noqa: BLE001
        _fail(f"job {job_id} did not finish in {JOB_TIMEOUT_MS / 1000:.0f} s "
              f"(state {page.text_content(row + ' .state')!r})", service, page)
    if state != "SUCCEEDED":
        _fail(f"job {job_id} ended {state}: {service.get_json('/api/jobs/' + job_id).get('error')}", service, page)
    assert page.text_content(row + " .progress .label").strip().endswith("/3")
    assert page.text_content(row + " .cr").strip()
    assert page.is_hidden(row + " button.stop")

    # the job page
    page.click(row + " td.kind")
    page.wait_for_selector("#job", state="visible")
    assert page.evaluate("location.hash") == f"#/jobs/{job_id}"
    assert page.text_content("#job-state").strip() == "SUCCEEDED"
    _images_loaded(page)
    assert page.evaluate("[document.querySelector('#original').naturalWidth,"
                         " document.querySelector('#original').naturalHeight]") == [64, 48]
    page.wait_for_function("() => ['#shape', '#ranks', '#cr'].every("
                           "s => document.querySelector(s).textContent.trim().length > 0)")
    result = service.get_json(f"/api/jobs/{job_id}/result")
    assert page.text_content("#shape").strip() == result["shape"]["text"]
    assert page.text_content("#ranks").replace(" ", "") == ",".join(map(str, result["ranks"]))
    assert float(page.text_content("#cr")) == pytest.approx(result["cr"], rel=1e-3)

    # a download link for every artifact, each fetchable with the page's token
    job = service.get_json(f"/api/jobs/{job_id}")
    links = page.eval_on_selector_all("a.download", "as => as.map(a => [a.dataset.name, a.href])")
    assert sorted(name for name, _ in links) == sorted(job["artifacts"])
    for name, href in links:
        assert urllib.parse.parse_qs(urllib.parse.urlparse(href).query).get("token") == [service.token]
        resp = page.request.get(href)
        assert resp.ok, (name, resp.status)
        assert len(resp.body()) > 0, name

    if os.environ.get("SHAPESEARCH_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    # back to the list: the row is still there
    page.click("#job a.back")
    page.wait_for_selector(row, state="visible")
    assert page.log.unexpected() == [], page.log.unexpected()


def test_job_page_updates_live(service, page, png):  # noqa: F811 - fixtures from .browser
    """Opened while the job runs, the job page follows it (server-sent events) to its results, no reload."""
    page.goto(service.page_url())
    _submit(page, png, "0.1", "4")
    job_id = _submitted(page, service)
    page.click("#notice a")
    page.wait_for_selector("#job", state="visible")
    page.wait_for_function("() => document.querySelector('#job-state').textContent.length > 0")
    # record every state the page shows, from its first load on
    page.evaluate("""() => { window.seenStates = [document.querySelector('#job-state').textContent];
        new MutationObserver(() => window.seenStates.push(document.querySelector('#job-state').textContent))
            .observe(document.querySelector('#job-state'), {childList: true, characterData: true, subtree: true}); }""")
    try:
        page.wait_for_function("() => ['SUCCEEDED', 'FAILED', 'STOPPED'].includes("
                               "document.querySelector('#job-state').textContent)", timeout=JOB_TIMEOUT_MS)
    except Exception:  # noqa: BLE001
        _fail(f"job page of {job_id} did not reach a final state", service, page)
    seen = page.evaluate("window.seenStates")
    assert seen[-1] == "SUCCEEDED", (seen, service.get_json(f"/api/jobs/{job_id}").get("error"))
    if seen[0] in FINISHED:
        pytest.skip(f"job {job_id} finished before its page was read; nothing live to check")
    assert page.evaluate("location.hash") == f"#/jobs/{job_id}"
    _images_loaded(page)
    page.wait_for_function("() => document.querySelector('#shape').textContent.trim().length > 0")
    assert page.is_hidden("#job-stop")
    assert page.log.unexpected() == [], page.log.unexpected()
