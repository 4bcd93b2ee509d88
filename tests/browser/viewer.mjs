// Drives Debian's Chromium (playwright-core) through the edge's viewer: sign in, open a slide,
// zoom with the wheel, pan by dragging, then report what was fetched and drawn as JSON.
// Environment: EDGE_URL, SLIDE_ID, USERNAME, PASSWORD, SCREENSHOT [, CHROMIUM].
import { chromium } from "playwright-core";

const { EDGE_URL, SLIDE_ID, USERNAME, PASSWORD, SCREENSHOT } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const tiles = [];
  const errors = [];
  page.on("response", (response) => {
    if (response.url().includes("_files/")) tiles.push(response.status());
  });
  page.on("pageerror", (error) => errors.push(String(error)));

  await page.goto(`${EDGE_URL}/view/${SLIDE_ID}`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL(`**/view/${SLIDE_ID}`), page.click("button[type=submit]")]);
  await page.waitForFunction(() => window.grassrootsViewerStatus && window.grassrootsViewerStatus.tilesLoaded > 0,
                             null, { timeout: 20000 });
  const zoomBefore = await page.evaluate(() => window.grassrootsViewer.viewport.getZoom());
  const tilesBefore = tiles.length;

  const box = await page.locator("#viewer").boundingBox();
  const centre = { x: box.x + box.width / 2, y: box.y + box.height / 2 };
  await page.mouse.move(centre.x, centre.y);
  for (let i = 0; i < 6; i++) {
    await page.mouse.wheel(0, -300);
    await page.waitForTimeout(250);
  }
  await page.mouse.down();
  await page.mouse.move(centre.x - 250, centre.y - 150, { steps: 12 });
  await page.mouse.up();
  await page.waitForFunction(() => window.grassrootsViewer.world.getItemAt(0).getFullyLoaded(), null, { timeout: 20000 })
    .catch(() => {});
  await page.waitForTimeout(500);

  const drawn = await page.evaluate(() => {
    const canvas = document.querySelector("#viewer .openseadragon-canvas canvas");
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let sampled = 0;
    let tissue = 0;
    for (let i = 0; i < data.length; i += 4 * 101) {
      sampled += 1;
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      const blank = a === 0 || (r > 235 && g > 235 && b > 235) || (r < 25 && g < 25 && b < 25);
      if (!blank) tissue += 1;
    }
    return {
      sampled,
      nonBlankFraction: tissue / sampled,
      zoom: window.grassrootsViewer.viewport.getZoom(),
      status: window.grassrootsViewerStatus,
      scaleBar: document.querySelector("#scalebar .label").textContent,
      navigator: !!document.querySelector(".navigator"),
    };
  });
  await page.screenshot({ path: SCREENSHOT });

  // The same page on a phone: it fits the screen and draws tiles.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const mobile = await phone.newPage();
  await mobile.goto(`${EDGE_URL}/view/${SLIDE_ID}`);
  await mobile.fill("#username", USERNAME);
  await mobile.fill("#password", PASSWORD);
  await Promise.all([mobile.waitForURL(`**/view/${SLIDE_ID}`), mobile.tap("button[type=submit]")]);
  await mobile.waitForFunction(() => window.grassrootsViewerStatus && window.grassrootsViewerStatus.tilesLoaded > 0,
                               null, { timeout: 20000 });
  const phoneLayout = await mobile.evaluate(() => ({
    pageWidth: document.documentElement.scrollWidth,
    viewerWidth: document.querySelector("#viewer").getBoundingClientRect().width,
  }));
  await mobile.screenshot({ path: SCREENSHOT.replace(/\.png$/, "-phone.png") });

  console.log(JSON.stringify({ tiles, tilesBefore, zoomBefore, errors, phoneLayout, ...drawn }));
} finally {
  await browser.close();
}
