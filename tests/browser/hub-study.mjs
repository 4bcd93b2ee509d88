// Drives Debian's Chromium (playwright-core) through the hub's view of a referred CT study, as
// the expert who holds the referral: the consult page's studies card, the series' pictures
// scrolled one at a time, the reformatted views
// (three planes, then a MIP slab) and the volume rendering (turned by a drag), every frame
// rendered by the referring edge and relayed by the hub. Screenshots go to SHOTS; prints a
// JSON report as its last line (tests/study_consult.rs judges it).
// Environment: HUB_URL, USERNAME, PASSWORD, REFERRAL, SHOTS [, CHROMIUM].
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const { HUB_URL, USERNAME, PASSWORD, REFERRAL, SHOTS } = process.env;
mkdirSync(SHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const report = { errors: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => report.errors.push(String(error)));
  await page.goto(`${HUB_URL}/login?next=${encodeURIComponent("/consult/" + REFERRAL)}`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  report.studiesCard = await page.textContent("#studies");
  await page.screenshot({ path: `${SHOTS}/hub-consult-studies.png`, fullPage: true });

  // The series' pictures one at a time, scrolled with the keys.
  await Promise.all([page.waitForNavigation(), page.click("#studies a:not([href$='/mpr']):not([href$='/3d'])")]);
  const images = () => page.evaluate(() => Object.assign({}, window.grassrootsImages));
  await page.waitForFunction(() => window.grassrootsImages && window.grassrootsImages.frames >= 1
    && !window.grassrootsImages.loading, null, { timeout: 60000 });
  report.imagesFirst = await images();
  await page.focus("#images");
  for (let i = 0; i < 3; i++) await page.keyboard.press("ArrowDown");
  await page.waitForFunction((n) => (window.grassrootsImages.shown || "").startsWith("index=" + n + "&")
    && !window.grassrootsImages.loading, report.imagesFirst.index + 3, { timeout: 60000 });
  report.imagesScrolled = await images();
  await page.screenshot({ path: `${SHOTS}/hub-images.png`, fullPage: true });
  // Measured: a length across the middle of the picture (mm, from its Pixel Spacing), then a
  // region's HU (measured by the edge), each by a drag.
  const drag = async (from, to) => {
    const box = await page.locator("#images").boundingBox();
    await page.mouse.move(box.x + box.width * from[0], box.y + box.height * from[1]);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * to[0], box.y + box.height * to[1], { steps: 4 });
    await page.mouse.up();
  };
  await page.check("input[name=images-mode][value=length]");
  await drag([0.4, 0.5], [0.6, 0.5]);
  await page.waitForFunction(() => /mm$/.test(document.getElementById("images-measure").textContent), null, { timeout: 30000 });
  report.imagesLength = await page.evaluate(() => ({ text: document.getElementById("images-measure").textContent,
    mm: window.grassrootsImages.length, shownWidth: document.querySelector("#images img").getBoundingClientRect().width,
    natural: [document.querySelector("#images img").naturalWidth, document.querySelector("#images img").naturalHeight],
    box: [document.getElementById("images").clientWidth, document.getElementById("images").clientHeight] }));
  await page.check("input[name=images-mode][value=region]");
  await drag([0.45, 0.45], [0.55, 0.55]);
  await page.waitForFunction(() => window.grassrootsImages.region, null, { timeout: 30000 });
  report.imagesRegion = await page.evaluate(() => ({ text: document.getElementById("images-measure").textContent,
    region: window.grassrootsImages.region, rect: window.grassrootsImages.regionRect,
    marked: document.querySelectorAll("#images-overlay rect").length }));
  await page.screenshot({ path: `${SHOTS}/hub-images-region.png`, fullPage: true });
  await page.goBack();

  // The reformatted views, from the consult page's link.
  await Promise.all([page.waitForNavigation(), page.click("#studies a[href$='/mpr']")]);
  report.mprPath = new URL(page.url()).pathname;
  const views = () => page.evaluate(() => Object.fromEntries(Object.entries(window.grassrootsMpr.views)
    .map(([name, view]) => [name, { shown: view.shown, loading: view.loading, wanted: view.wanted }])));
  const settled = () => page.waitForFunction(() => window.grassrootsMpr && Object.values(window.grassrootsMpr.views)
    .every((view) => view.shown && !view.loading && !view.wanted), null, { timeout: 60000 });
  await settled();
  report.mprFirst = await views();
  report.mprNatural = await page.evaluate(() => Array.from(document.querySelectorAll(".mpr-view img"))
    .map((image) => [image.naturalWidth, image.naturalHeight]));
  await page.selectOption("#mpr-projection", "mip");
  await page.waitForFunction(() => Object.values(window.grassrootsMpr.views)
    .every((view) => (view.shown || "").includes("projection=mip")), null, { timeout: 60000 });
  await settled();
  report.mprMip = await views();
  report.mprErrors = await page.evaluate(() => window.grassrootsMpr.errors);
  report.mprFrames = await page.evaluate(() => window.grassrootsMpr.frames);
  await page.screenshot({ path: `${SHOTS}/hub-mpr-mip.png`, fullPage: true });

  // The volume rendering, turned by a drag.
  await Promise.all([page.waitForNavigation(), page.click("a[href$='/3d']")]);
  const volume = () => page.evaluate(() => Object.assign({}, window.grassrootsVolume));
  const rendered = (test) => page.waitForFunction(test, null, { timeout: 60000 });
  await rendered(() => window.grassrootsVolume && window.grassrootsVolume.frames >= 1 && !window.grassrootsVolume.loading);
  report.volumeFirst = await volume();
  await page.screenshot({ path: `${SHOTS}/hub-volume-front.png`, fullPage: true });
  const turnable = await page.locator("#volume").boundingBox();
  await page.mouse.move(turnable.x + turnable.width * 0.5, turnable.y + turnable.height * 0.5);
  await page.mouse.down();
  for (let step = 1; step <= 6; step++) {
    await page.mouse.move(turnable.x + turnable.width * 0.5 - step * 30, turnable.y + turnable.height * 0.5, { steps: 2 });
    await page.waitForTimeout(60);
  }
  await page.mouse.up();
  await rendered(() => !window.grassrootsVolume.loading && (window.grassrootsVolume.shown || "").includes("azimuth=90.0"));
  report.volumeTurned = await volume();
  await page.screenshot({ path: `${SHOTS}/hub-volume-turned.png`, fullPage: true });
  // A socket refused before it opens (a series not in the referral): the page's socket asks
  // why with a plain request and stops with the hub's reason instead of knocking again.
  report.refusedSocket = await page.evaluate(() => new Promise((resolve) => {
    const answers = [];
    const address = location.pathname.replace(/\/series\/[^/]+\/3d$/, "/series/" + "cd".repeat(16) + "/render");
    window.grassrootsRenderSocket(address, { frame: () => {}, refused: (answer) => answers.push(answer) });
    setTimeout(() => resolve(answers), 5000);
  }));
  // A wish whose query is longer than the wire message allows is refused at the hub, with the
  // limit, before anything is asked of the edge (a socket of its own, as the page's).
  report.longQuery = await page.evaluate(() => new Promise((resolve) => {
    const socket = new WebSocket(location.href.replace(/^http/, "ws").replace(/\/3d$/, "/render"));
    socket.addEventListener("open", () => socket.send(JSON.stringify(
      { view: "long", seq: 1, kind: "volume", query: "azimuth=0&pad=" + "x".repeat(2100) })));
    socket.addEventListener("message", (event) => { resolve(String(event.data)); socket.close(); });
    socket.addEventListener("close", () => resolve("closed"));
    setTimeout(() => resolve("timed out"), 20000);
  }));
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
