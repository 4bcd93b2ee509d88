// Drives Debian's Chromium (playwright-core) to the hub's rounds page: sign in, wait for the
// uPlot chart of validation accuracy, and report what was drawn as JSON.
// Environment: HUB_URL, USERNAME, PASSWORD, SCREENSHOT [, CHROMIUM].
import { chromium } from "playwright-core";

const { HUB_URL, USERNAME, PASSWORD, SCREENSHOT } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${HUB_URL}/rounds`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL("**/rounds"), page.click("button[type=submit]")]);
  await page.waitForSelector("#round-chart .uplot canvas", { timeout: 15000 });
  const report = await page.evaluate(() => {
    const box = document.getElementById("round-chart");
    const canvas = box.querySelector("canvas");
    return {
      points: Number(box.dataset.points || 0),
      canvasWidth: canvas ? canvas.width : 0,
      legend: Array.from(box.querySelectorAll(".u-legend .u-label")).map((l) => l.textContent),
    };
  });
  report.errors = errors;
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT, fullPage: true });
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
