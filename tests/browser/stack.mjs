// Drives Debian's Chromium (playwright-core) through the edge's radiology stack viewer on a real
// chest CT series: the first picture, scrolling with the keys and the wheel, a window preset, a
// window dragged (small pictures while dragging, the full one after), a length measured in mm
// and a region's HU; the reformatted views and the volume rendering (turned by a drag, another
// preset, cropped). Screenshots go to SHOTS; prints a JSON report as its last line
// (tests/studies.rs judges it). Environment: EDGE_URL, PASSWORD, VIEWER_PATH, SHOTS [, CHROMIUM].
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const { EDGE_URL, PASSWORD, VIEWER_PATH, SHOTS } = process.env;
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
  await page.goto(`${EDGE_URL}/login?next=${encodeURIComponent(VIEWER_PATH)}`);
  await page.fill("#username", "dr-li");
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  const state = () => page.evaluate(() => Object.assign({}, window.grassrootsStack));
  const shown = (count) => page.waitForFunction((n) => window.grassrootsStack && window.grassrootsStack.frames >= n
    && !window.grassrootsStack.loading && !window.grassrootsStack.wanted, count, { timeout: 20000 });

  await shown(1);
  report.first = await state();
  report.images = await page.evaluate(() => JSON.parse(document.getElementById("stack-viewer").dataset.stack).length);
  report.natural = await page.evaluate(() => [document.getElementById("stack-image").naturalWidth,
                                              document.getElementById("stack-image").naturalHeight]);
  await page.screenshot({ path: `${SHOTS}/stack-first.png` });

  // Scrolling: keys, then the wheel.
  await page.focus("#stack-viewer");
  for (let i = 0; i < 5; i++) await page.keyboard.press("ArrowDown");
  await shown(report.first.frames + 1);
  report.afterKeys = (await state()).index;
  await page.mouse.move(700, 500);
  await page.mouse.wheel(0, 120);
  await page.waitForFunction((i) => window.grassrootsStack.index === i + 1, report.afterKeys);
  await shown(1);
  report.afterWheel = (await state()).index;

  // A preset, then a dragged window: quick small pictures, then the full one.
  await page.selectOption("#stack-window", "-600,1500");
  await page.waitForFunction(() => (window.grassrootsStack.shown || "").includes("window=-600,1500"));
  await shown(1);
  await page.screenshot({ path: `${SHOTS}/stack-lung-window.png` });
  report.lungStatus = await page.textContent("#stack-status");
  await page.check("input[name=stack-mode][value=window]");
  const box = await page.locator("#stack-viewer").boundingBox();
  const cx = box.x + box.width / 2, cy = box.y + box.height / 2;
  await page.mouse.move(cx, cy);
  await page.mouse.down();
  for (let i = 1; i <= 10; i++) await page.mouse.move(cx + i * 10, cy + i * 5);
  report.quickWhileDragging = await page.evaluate(() => window.grassrootsStack.shown || "");
  await page.mouse.up();
  await shown(1);
  report.afterDrag = await state();

  // A length across the image and a region's HU.
  await page.selectOption("#stack-window", "40,400");
  await shown(1);
  await page.check("input[name=stack-mode][value=length]");
  const image = await page.locator("#stack-image").boundingBox();
  await page.mouse.move(image.x + image.width * 0.25, image.y + image.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(image.x + image.width * 0.75, image.y + image.height * 0.5, { steps: 5 });
  await page.mouse.up();
  report.length = (await state()).length;
  report.lengthText = await page.textContent("#stack-measure");
  await page.check("input[name=stack-mode][value=region]");
  await page.mouse.move(image.x + image.width * 0.45, image.y + image.height * 0.45);
  await page.mouse.down();
  await page.mouse.move(image.x + image.width * 0.55, image.y + image.height * 0.55, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => window.grassrootsStack.region, null, { timeout: 10000 });
  report.region = (await state()).region;
  report.regionRect = (await state()).regionRect;
  report.regionText = await page.textContent("#stack-measure");
  await page.screenshot({ path: `${SHOTS}/stack-measured.png` });
  report.imageWidth = image.width;

  // The reformatted views: three planes, linked by a click; then a MIP slab.
  await page.goto(`${EDGE_URL}${VIEWER_PATH}/mpr`);
  const views = () => page.evaluate(() => Object.fromEntries(Object.entries(window.grassrootsMpr.views)
    .map(([name, view]) => [name, { shown: view.shown, loading: view.loading, wanted: view.wanted }])));
  const settled = () => page.waitForFunction(() => window.grassrootsMpr && Object.values(window.grassrootsMpr.views)
    .every((view) => view.shown && !view.loading && !view.wanted), null, { timeout: 30000 });
  await settled();
  report.mprFirst = await views();
  const axial = await page.locator(".mpr-view[data-orientation=axial]").boundingBox();
  await page.mouse.click(axial.x + axial.width * 0.7, axial.y + axial.height * 0.4);
  await page.waitForFunction(() => window.grassrootsMpr.point.x > 0);
  await settled();
  report.mprPoint = await page.evaluate(() => Object.assign({}, window.grassrootsMpr.point));
  report.mprLinked = await views();
  await page.selectOption("#mpr-projection", "mip");
  await page.waitForFunction(() => Object.values(window.grassrootsMpr.views)
    .every((view) => (view.shown || "").includes("projection=mip")), null, { timeout: 30000 });
  await settled();
  report.mprMip = await views();
  report.mprErrors = await page.evaluate(() => window.grassrootsMpr.errors);
  await page.screenshot({ path: `${SHOTS}/mpr-mip.png`, fullPage: true });

  // The volume rendering: the first frame, a drag that turns it (small frames while dragging,
  // the full one after), another preset, and a cropping slider.
  await page.goto(`${EDGE_URL}${VIEWER_PATH}/3d`);
  const volume = () => page.evaluate(() => Object.assign({}, window.grassrootsVolume));
  const rendered = (test) => page.waitForFunction(test, null, { timeout: 30000 });
  await rendered(() => window.grassrootsVolume && window.grassrootsVolume.frames >= 1 && !window.grassrootsVolume.loading);
  report.volumeFirst = await volume();
  await page.screenshot({ path: `${SHOTS}/volume-front.png`, fullPage: true });
  const turnable = await page.locator("#volume").boundingBox();
  await page.mouse.move(turnable.x + turnable.width * 0.5, turnable.y + turnable.height * 0.5);
  await page.mouse.down();
  report.volumeQuick = [];
  for (let step = 1; step <= 6; step++) {
    await page.mouse.move(turnable.x + turnable.width * 0.5 - step * 30, turnable.y + turnable.height * 0.5, { steps: 2 });
    await page.waitForTimeout(60);
    report.volumeQuick.push((await volume()).shown);
  }
  await page.mouse.up();
  await rendered(() => !window.grassrootsVolume.loading && (window.grassrootsVolume.shown || "").includes("azimuth=90.0"));
  report.volumeTurned = await volume();
  await page.screenshot({ path: `${SHOTS}/volume-turned.png`, fullPage: true });
  await page.selectOption("#volume-preset", "lung");
  await rendered(() => !window.grassrootsVolume.loading && (window.grassrootsVolume.shown || "").includes("preset=lung"));
  await page.locator("#crop-y1").fill("50");
  await rendered(() => !window.grassrootsVolume.loading && (window.grassrootsVolume.shown || "").includes("crop=0.00,1.00,0.00,0.50"));
  report.volumeCropped = await volume();
  await page.screenshot({ path: `${SHOTS}/volume-lung-cropped.png`, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
