"""Real headless Chromium (Selenium + Debian's chromium/chromium-driver) driving the
login and consent pages of a real `gatehouse auth` process, for the public SPA client
with PKCE. The redirect lands on the fixtures' loopback callback server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import urllib.parse

import pytest
import requests

from gatehouse_testlib import pkce_pair

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    _SELENIUM_ERROR = None
except ImportError as e:  # reported by the fixture, so the failure says what to do
    _SELENIUM_ERROR = e

CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WAIT = 20  # seconds


@pytest.fixture
def browser(tmp_path):
    if _SELENIUM_ERROR is not None:
        pytest.fail(
            f"selenium is not importable ({_SELENIUM_ERROR}); run the interop tests with /usr/bin/python3 "
            f"after scripts/install-test-deps.sh (Debian package python3-selenium)",
            pytrace=False,
        )
    for path in (CHROMEDRIVER, CHROMIUM):
        if not shutil.which(path):
            pytest.fail(f"{path} not found; run scripts/install-test-deps.sh (chromium, chromium-driver)", pytrace=False)
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _spa_authorize_url(auth_env) -> tuple[str, str, str]:
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    params = {
        "response_type": "code",
        "client_id": "demo-spa",
        "redirect_uri": auth_env.callback.spa_redirect_uri,
        "scope": "orders:read",
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return auth_env.server.authorize_url + "?" + urllib.parse.urlencode(params), state, verifier


def _fill_login(driver, username: str, password: str):
    WebDriverWait(driver, WAIT).until(EC.visibility_of_element_located((By.ID, "username")))
    user = driver.find_element(By.ID, "username")
    user.clear()
    user.send_keys(username)
    pw = driver.find_element(By.ID, "password")
    pw.clear()
    pw.send_keys(password)


def test_wrong_password_shows_login_error(auth_env, browser):
    url, _, _ = _spa_authorize_url(auth_env)
    browser.get(url)
    wrong = "wrong-password-" + secrets.token_hex(8)
    auth_env.remember(wrong)  # a submitted password must not be logged either
    _fill_login(browser, "alice", wrong)
    browser.find_element(By.ID, "login-submit").click()
    error = WebDriverWait(browser, WAIT).until(EC.visibility_of_element_located((By.ID, "login-error")))
    assert error.text.strip(), "the #login-error element is empty"
    # the form is shown again
    assert browser.find_element(By.ID, "login-form")
    assert browser.find_element(By.ID, "username")
    assert urllib.parse.urlsplit(browser.current_url).port == auth_env.server.port


def test_browser_login_consent_and_callback(auth_env, browser, tmp_path):
    url, state, verifier = _spa_authorize_url(auth_env)
    browser.get(url)

    # /authorize -> 303 /login?request=...
    WebDriverWait(browser, WAIT).until(EC.visibility_of_element_located((By.ID, "login-form")))
    assert urllib.parse.urlsplit(browser.current_url).path == "/login", browser.current_url

    shot = tmp_path / "login.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", f"bad screenshot: {len(data)} bytes"
    if os.environ.get("GATEHOUSE_SCREENSHOT_DIR"):
        keep = os.path.join(os.environ["GATEHOUSE_SCREENSHOT_DIR"], "login.png")
        shutil.copyfile(shot, keep)

    _fill_login(browser, "alice", auth_env.creds.alice_password)
    browser.find_element(By.ID, "login-submit").click()

    approve = WebDriverWait(browser, WAIT).until(EC.element_to_be_clickable((By.ID, "consent-approve")))
    assert urllib.parse.urlsplit(browser.current_url).path == "/consent", browser.current_url
    assert browser.find_element(By.ID, "consent-deny")
    approve.click()

    hit = auth_env.callback.wait_for(
        lambda h: h.path == "/spa/callback" and h.query.get("state") == state, timeout=WAIT
    )
    code = hit.query.get("code")
    auth_env.remember(code)
    assert code, hit.raw_path
    assert hit.query.get("state") == state
    assert hit.query.get("iss") == auth_env.server.issuer, hit.query
    assert "error" not in hit.query, hit.query
    WebDriverWait(browser, WAIT).until(lambda d: urllib.parse.urlsplit(d.current_url).path == "/spa/callback")

    # the browser's session cookie is HttpOnly (invisible to scripts) and SameSite=Lax
    browser.get(auth_env.server.url("/healthz"))
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert "gatehouse_session" in cookies, cookies.keys()
    assert cookies["gatehouse_session"].get("httpOnly") is True
    assert cookies["gatehouse_session"].get("sameSite") == "Lax"
    assert "gatehouse_session" not in (browser.execute_script("return document.cookie") or "")

    # the code is real: the SPA redeems it with its PKCE verifier
    r = requests.post(
        auth_env.server.token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": auth_env.callback.spa_redirect_uri,
            "client_id": "demo-spa",
            "code_verifier": verifier,
        },
    )
    assert r.status_code == 200, r.text
    tok = r.json()
    auth_env.remember(tok.get("access_token"), tok.get("refresh_token"))
    assert tok.get("access_token") and tok.get("token_type") == "Bearer"
