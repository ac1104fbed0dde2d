"""Drives the dashboard in a real headless Chromium (Debian's chromium and chromium-driver).

Usage: dashboard.py BASE_URL KEY_ENV TOKEN SCREENSHOT FAILED_ID DEAD_TOKEN SCHEDULED_ID
Logs in with the admin key from $KEY_ENV, checks the session cookie's flags, sends through the
test-send form, waits for "delivered" and for the live figures to count it, checks the charts
are drawn and move and the health strip shows the app, saves a screenshot, then uses the
lookup box: the delivered id and FAILED_ID with their attempts, and DEAD_TOKEN (of app shop)
registered dead, cleared with its button; SCHEDULED_ID (waiting for its time) cancelled with
the lookup's button; app shop paused and resumed with its buttons. Prints a JSON summary; exits non-zero (with the
reason) on any failure.
"""
import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, key_env, token, shot, failed_id, dead_token, scheduled_id = sys.argv[1:8]
options = Options()
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1360,1500", "--force-device-scale-factor=1"):
    options.add_argument(arg)
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
driver = webdriver.Chrome(service=service, options=options)
try:
    wait = WebDriverWait(driver, 30)
    driver.get(base + "/")
    driver.find_element(By.ID, "key").send_keys(os.environ[key_env])
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(lambda d: d.find_elements(By.ID, "send-form"))
    cookie = driver.get_cookie("pushgate_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    before = int(driver.find_element(By.ID, "f-delivered").text)

    driver.find_element(By.NAME, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#send-form button").click()
    wait.until(lambda d: "delivered" in d.find_element(By.ID, "send-result").text)
    result = driver.find_element(By.ID, "send-result").text
    # The figures refresh without a reload.
    wait.until(lambda d: int(d.find_element(By.ID, "f-delivered").text) > before)
    # The charts: drawn, with at least one sample the gateway took (every 10 s), and moving
    # with each refresh; the failures' reasons named; the app's cells in its strip. Read in one
    # script each time: the page redraws them every 2 s.
    charts = lambda d: d.execute_script("""
        const q = s => document.querySelector(s);
        return {
          samples: Number(q("#charts").dataset.samples || 0),
          path: (q("#chart-delivered path.line") || {}).getAttribute?.("d") || null,
          failed: q("#legend-failed").textContent,
          latency: document.querySelectorAll("#chart-latency path.line").length,
          cells: [...document.querySelectorAll('#health svg[data-app="shop"] rect')]
                   .map(r => r.getAttribute("class")),
        };""")
    WebDriverWait(driver, 40).until(lambda d: charts(d)["samples"] >= 1 and charts(d)["path"])
    first = charts(driver)
    wait.until(lambda d: charts(d)["path"] != first["path"])
    drawn = charts(driver)
    failed_legend, latency_paths, cells = drawn["failed"], drawn["latency"], drawn["cells"]
    apps = driver.find_element(By.ID, "apps").text
    reasons = driver.find_element(By.ID, "reasons").text
    expiring = len(driver.find_elements(By.CSS_SELECTOR, "#apps .cred.expiring"))
    warnings = driver.find_element(By.ID, "warnings").text
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(shot)

    # The lookup box. Each answer is read in one script: what the result area shows.
    def look_up(q):
        box = driver.find_element(By.ID, "lookup-q")
        box.clear()
        box.send_keys(q)
        driver.find_element(By.CSS_SELECTOR, "#lookup-form button").click()

    shown = lambda d: d.execute_script("""
        const out = document.getElementById("lookup-result");
        const cells = sel => [...out.querySelectorAll(sel)].map(tr =>
          [...tr.querySelectorAll("td")].map(td => td.textContent));
        return {
          text: out.textContent,
          fields: Object.fromEntries(cells("table.fields tr")),
          attempts: cells("table.attempts tbody tr"),
          notifications: cells("table.notifications tbody tr"),
          clear: !!document.getElementById("lookup-clear"),
          cancel: !!document.getElementById("lookup-cancel"),
          cancel_request: !!document.getElementById("lookup-cancel-request"),
        };""")
    delivered_id = result.split(":")[0]
    look_up(delivered_id)
    wait.until(lambda d: shown(d)["fields"].get("id") == delivered_id)
    delivered = shown(driver)
    look_up(failed_id)
    wait.until(lambda d: shown(d)["fields"].get("id") == failed_id)
    failed = shown(driver)
    driver.execute_script("document.getElementById('lookup-form').scrollIntoView()")
    driver.save_screenshot(shot.replace(".png", "-lookup.png"))
    look_up(dead_token)
    wait.until(lambda d: "registered dead" in shown(d)["text"] and shown(d)["notifications"])
    dead = shown(driver)
    driver.find_element(By.ID, "lookup-clear").click()
    wait.until(lambda d: "not registered dead" in shown(d)["text"])
    cleared = shown(driver)
    look_up(scheduled_id)
    wait.until(lambda d: shown(d)["fields"].get("id") == scheduled_id)
    scheduled = shown(driver)
    driver.find_element(By.ID, "lookup-cancel").click()
    wait.until(lambda d: shown(d)["fields"].get("state") == "cancelled")
    cancelled = shown(driver)

    # An app's pause and resume, with the buttons in its row.
    app_row = lambda d: d.execute_script("""
        return [...document.querySelectorAll("#apps tr")]
          .map(tr => tr.textContent).find(t => t.startsWith("shop")) || "";""")
    # The table is drawn again every 2 s: each button is found and clicked in one script, so
    # that the one clicked is the one on the page.
    press = lambda d, id: d.execute_script(
        "const b = document.getElementById(arguments[0]); if (!b) return false; b.click(); return true;",
        id)
    wait.until(lambda d: press(d, "pause-shop"))
    wait.until(lambda d: "paused since" in app_row(d) and d.find_elements(By.ID, "resume-shop"))
    paused = app_row(driver)
    wait.until(lambda d: press(d, "resume-shop"))
    wait.until(lambda d: "sending" in app_row(d) and d.find_elements(By.ID, "pause-shop"))
    resumed = app_row(driver)
    print(json.dumps({"result": result, "before": before, "apps": apps, "reasons": reasons,
                      "expiring": expiring, "warnings": warnings, "title": driver.title,
                      "failed_legend": failed_legend, "latency_paths": latency_paths,
                      "cells": cells, "delivered": delivered, "failed": failed, "dead": dead,
                      "cleared": cleared, "scheduled": scheduled, "cancelled": cancelled,
                      "paused": paused, "resumed": resumed}))
finally:
    driver.quit()
