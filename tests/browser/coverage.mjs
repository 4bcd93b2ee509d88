// Drives Debian's Chromium (playwright-core) through the hub's coverage dashboard: sign in as
// an authority, wait for the map and the uPlot charts, read what was drawn and the alerts; then
// the same page on a 390 px phone (tables as cards, nothing wider than the screen); then the
// monthly report printed to PDF. Reports what it saw as JSON.
// Environment: HUB_URL, USERNAME, PASSWORD, SCREENSHOT, PHONE_SCREENSHOT, REPORT_PDF [, CHROMIUM].
import { chromium } from "playwright-core";
import { statSync } from "node:fs";

const { HUB_URL, USERNAME, PASSWORD, SCREENSHOT, PHONE_SCREENSHOT, REPORT_PDF } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${HUB_URL}/coverage`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL("**/coverage"), page.click("button[type=submit]")]);
  await page.waitForFunction(() => document.querySelectorAll(".trend-chart .uplot canvas").length >= 3,
    null, { timeout: 20000 });
  const report = await page.evaluate(() => {
    const box = document.querySelector(".trend-chart");
    return {
      dots: document.querySelectorAll("svg.coverage-map circle").length,
      outlines: document.querySelectorAll("svg.coverage-map path.outline").length,
      charts: box.querySelectorAll(".uplot").length,
      chartPoints: Number(box.dataset.points || 0),
      alerts: Array.from(document.querySelectorAll(".alerts li")).map((li) => li.textContent).join("\n"),
    };
  });
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT, fullPage: true });

  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    storageState: await context.storageState(),
  });
  const small = await phone.newPage();
  small.on("pageerror", (error) => errors.push(String(error)));
  await small.goto(`${HUB_URL}/coverage`);
  await small.waitForSelector("table.cards");
  const phoneView = await small.evaluate(() => ({
    header: getComputedStyle(document.querySelector("table.cards thead")).display,
    width: document.documentElement.scrollWidth,
  }));
  report.phoneHeader = phoneView.header;
  report.phoneWidth = phoneView.width;
  report.phoneFits = phoneView.width <= 392;
  if (PHONE_SCREENSHOT) await small.screenshot({ path: PHONE_SCREENSHOT, fullPage: true });

  const printable = await context.newPage();
  printable.on("pageerror", (error) => errors.push(String(error)));
  await printable.goto(`${HUB_URL}/coverage/report`);
  await printable.emulateMedia({ media: "print" });
  report.printHidesHeader = await printable.evaluate(
    () => getComputedStyle(document.querySelector("header")).display === "none");
  if (REPORT_PDF) {
    await printable.pdf({ path: REPORT_PDF, format: "A4", printBackground: true });
    report.pdfBytes = statSync(REPORT_PDF).size;
  }
  report.errors = errors;
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
