// Drives Debian's Chromium (playwright-core) through the hub's consult page as the expert: sign
// in, see the slide's tiles arrive from the edge through the hub, live through a link drop (the
// test kills the edge when this script prints "drop-link" and restarts it on "saw-offline"),
// draw a rectangle, a polygon and a point, and send the report. Prints progress lines, then a
// JSON summary as its last line.
// Before the drop, the county doctor follows the expert live at the edge (a second browser).
// Environment: HUB_URL, REFERRAL_ID, USERNAME, PASSWORD, SCREENSHOT, EDGE_URL, EDGE_USERNAME,
// SLIDE_ID [, CHROMIUM].
import { chromium } from "playwright-core";

const { HUB_URL, REFERRAL_ID, USERNAME, PASSWORD, SCREENSHOT, EDGE_URL, EDGE_USERNAME, SLIDE_ID } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const say = (line) => console.log(line);
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  const tileStatuses = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("response", (response) => {
    if (response.url().includes("_files/")) tileStatuses.push(response.status());
  });
  const consultUrl = `${HUB_URL}/consult/${REFERRAL_ID}`;
  await page.goto(consultUrl);
  await page.fill("#username", USERNAME);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL(`**/consult/${REFERRAL_ID}`), page.click("button[type=submit]")]);
  const status = () => page.evaluate(() => window.grassrootsViewerStatus);
  // The viewer's script may not have run yet when the page's URL is there: wait for it too.
  await page.waitForFunction(() => window.grassrootsViewerStatus && window.grassrootsViewerStatus.tilesLoaded > 0
                               && window.grassrootsViewerStatus.linkState === "online", null, { timeout: 30000 });
  const before = await status();

  // Live session: the county doctor opens the slide at the edge, following the expert, whose
  // panning and zooming the doctor's viewer then repeats.
  const follower = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const doctor = await follower.newPage();
  doctor.on("pageerror", (error) => errors.push("edge page: " + String(error)));
  await doctor.goto(`${EDGE_URL}/view/${SLIDE_ID}?referral=${REFERRAL_ID}&follow=true`);
  await doctor.fill("#username", EDGE_USERNAME);
  await doctor.fill("#password", PASSWORD);
  await Promise.all([doctor.waitForURL(`**/view/${SLIDE_ID}*`), doctor.click("button[type=submit]")]);
  await doctor.waitForFunction(() => window.grassrootsFollow && window.grassrootsFollow.connected
                                 && window.grassrootsViewer.world.getItemCount() > 0, null, { timeout: 20000 });
  {
    const b = await page.locator("#viewer").boundingBox();
    const c = { x: b.x + b.width / 2, y: b.y + b.height / 2 };
    await page.mouse.move(c.x, c.y);
    for (let i = 0; i < 2; i++) {
      await page.mouse.wheel(0, -300);
      await page.waitForTimeout(300);
    }
    await page.mouse.down();
    await page.mouse.move(c.x - 200, c.y - 120, { steps: 10 });
    await page.mouse.up();
    await page.waitForTimeout(1500);
  }
  const expertView = await page.evaluate(() => {
    const v = window.grassrootsViewer.viewport;
    const r = v.viewportToImageRectangle(v.getBounds());
    return [r.x + r.width / 2, r.y + r.height / 2, r.width];
  });
  const followed = await doctor.waitForFunction((e) => {
    const f = window.grassrootsFollow;
    if (!f.last) return false;
    const v = window.grassrootsViewer.viewport;
    const r = v.viewportToImageRectangle(v.getBounds());
    const centre = [r.x + r.width / 2, r.y + r.height / 2];
    return Math.abs(centre[0] - e[0]) < e[2] * 0.1 && Math.abs(centre[1] - e[1]) < e[2] * 0.1
      ? { updates: f.updates, centre: centre, pointerShown: document.querySelector(".expert-pointer").style.display === "block" }
      : false;
  }, expertView, { timeout: 20000 }).then((handle) => handle.jsonValue()).catch((error) => ({ failed: String(error) }));
  const liveAtHub = await page.evaluate(() => window.grassrootsLive);
  await follower.close();

  // The link drops: the page says so without a reload; tiles asked for meanwhile fail.
  say("drop-link");
  await page.waitForFunction(() => window.grassrootsViewerStatus.linkState === "offline", null, { timeout: 60000 });
  const offlineBanner = await page.locator("#link-status").textContent();
  const box = await page.locator("#viewer").boundingBox();
  const centre = { x: box.x + box.width / 2, y: box.y + box.height / 2 };
  await page.mouse.move(centre.x, centre.y);
  for (let i = 0; i < 4; i++) {
    await page.mouse.wheel(0, -400);
    await page.waitForTimeout(300);
  }
  // Until OpenSeadragon gives some tiles up (after its own retries).
  await page.waitForFunction(() => window.grassrootsViewerStatus.tilesGivenUp > 0, null, { timeout: 30000 });
  const whileDown = await status();
  say("saw-offline");

  // It comes back: the missing tiles load, still the same page.
  await page.waitForFunction(() => window.grassrootsViewerStatus.linkState === "online"
                               && window.grassrootsViewerStatus.recoveries > 0, null, { timeout: 90000 });
  // The tiles that failed while the link was down are asked for again and arrive.
  await page.waitForFunction(() => window.grassrootsViewerStatus.reloadedAfterFailure > 0
                               && window.grassrootsViewer.world.getItemAt(0).getFullyLoaded(), null, { timeout: 30000 });
  const afterRecovery = await status();
  const sameDocument = await page.evaluate(() => performance.getEntriesByType("navigation").length === 1
                                                  && !!window.grassrootsViewer);
  say("recovered");

  // Annotate: a rectangle (drag), a polygon (three clicks, Enter), a point (click).
  await page.click("[data-tool=rectangle]");
  await page.mouse.move(centre.x - 150, centre.y - 100);
  await page.mouse.down();
  await page.mouse.move(centre.x + 50, centre.y + 20, { steps: 8 });
  await page.mouse.up();
  await page.click("[data-tool=polygon]");
  for (const [dx, dy] of [[100, -120], [220, -60], [140, 60]]) {
    await page.mouse.click(centre.x + dx, centre.y + dy);
    await page.waitForTimeout(400);
  }
  await page.keyboard.press("Enter");
  await page.fill("#annotation-class", "Mitosis");
  await page.click("[data-tool=point]");
  await page.mouse.click(centre.x - 200, centre.y + 150);
  await page.waitForTimeout(300);
  const annotations = await page.evaluate(() => window.grassrootsAnnotations());
  const drawnShapes = await page.locator("#viewer svg.annotations polygon, #viewer svg.annotations circle").count();
  await page.screenshot({ path: SCREENSHOT });

  await page.selectOption("#category", "malignant");
  await page.fill("#diagnosis", "Moderately differentiated adenocarcinoma.");
  await page.fill("#recommendations", "Staging CT; surgical referral.");
  await page.click("#report-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#report-result").dataset.state, null, { timeout: 20000 });
  const result = await page.locator("#report-result").evaluate((e) => ({ state: e.dataset.state, text: e.textContent }));

  console.log(JSON.stringify({
    before, expertView, followed, liveAtHub, whileDown, afterRecovery, offlineBanner, sameDocument, annotations, drawnShapes, result,
    tileStatuses, errors,
  }));
} finally {
  await browser.close();
}
