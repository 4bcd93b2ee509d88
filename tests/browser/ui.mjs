// Drives Debian's Chromium (playwright-core) through both nodes' everyday pages as each role, on
// a phone (390 x 844, touch) and a desktop (1400 x 900): the header's navigation (what each
// account is shown, the current page marked, the phone's menu), words that no table breaks, the
// consult's hint before the case is taken, a second expert's claim refused with the reason
// beside the button, and axe-core's accessibility check of every page. Screenshots go to SHOTS.
// Prints a JSON report as its last line; tests/ui.rs judges it.
// Environment: EDGE_URL, HUB_URL, PASSWORD, SLIDE_ID, REFERRAL_ID, EDGE_REFERRAL, SHOTS [, CHROMIUM].
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";

const { EDGE_URL, HUB_URL, PASSWORD, SLIDE_ID, REFERRAL_ID, SHOTS } = process.env;
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
mkdirSync(SHOTS, { recursive: true });

const viewports = {
  phone: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 },
  desktop: { viewport: { width: 1400, height: 900 } },
};
const accounts = [
  { node: "edge", base: EDGE_URL, user: "dr-li", pages: ["/worklist", "/slides", "/cases", "/studies", `/view/${SLIDE_ID}`,
    "/referrals", `/referrals/${process.env.EDGE_REFERRAL}`, "/federated", "/"] },
  { node: "edge", base: EDGE_URL, user: "it-wu", pages: ["/", "/security"] },
  { node: "hub", base: HUB_URL, user: "root", pages: ["/referrals", "/sites", "/models", "/rounds", "/coverage",
    "/transfers", "/security"] },
  { node: "hub", base: HUB_URL, user: "health-bureau", pages: ["/coverage", "/sites"] },
  { node: "hub", base: HUB_URL, user: "prof-zhang", pages: ["/referrals"] },
];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const report = { pages: [], consult: {}, errors: [] };

async function signIn(context, base, user, next) {
  const page = await context.newPage();
  page.on("pageerror", (error) => report.errors.push(`${base}${next}: ${error}`));
  await page.goto(`${base}/login?next=${encodeURIComponent(next)}`);
  await page.fill("#username", user);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  return page;
}

// What a page shows and how it holds up: navigation, broken words in tables, axe's findings.
async function inspect(page, viewportName) {
  const menu = page.locator(".site-nav .menu-toggle");
  let menuShown = false;
  if (viewportName === "phone" && await menu.isVisible()) {
    menuShown = true;
    await menu.click();
  }
  const seen = await page.evaluate(() => {
    const links = Array.from(document.querySelectorAll(".site-nav a")).map((a) => ({
      href: a.getAttribute("href"),
      current: a.getAttribute("aria-current") === "page",
      visible: a.offsetParent !== null,
    }));
    // A word of a table cell drawn on more than one line is a word the layout broke.
    const broken = [];
    document.querySelectorAll("td").forEach((cell) => {
      const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        if (node.parentElement.closest(".name, pre, code")) continue;
        const text = node.textContent;
        for (const match of text.matchAll(/\S+/g)) {
          const range = document.createRange();
          range.setStart(node, match.index);
          range.setEnd(node, match.index + match[0].length);
          const lines = new Set(Array.from(range.getClientRects()).map((r) => Math.round(r.top)));
          if (lines.size > 1) broken.push(match[0]);
        }
      }
    });
    return { links, broken, title: document.title };
  });
  await page.evaluate(axeSource);
  const axe = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                     targets: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
  return Object.assign(seen, { axe, menuShown });
}

try {
  for (const [viewportName, options] of Object.entries(viewports)) {
    for (const account of accounts) {
      const context = await browser.newContext(options);
      const page = await signIn(context, account.base, account.user, account.pages[0]);
      for (const path of account.pages) {
        await page.goto(`${account.base}${path}`);
        // Pages that follow progress reload themselves: held still while they are inspected.
        await page.evaluate(() => sessionStorage.setItem("grassroots-paused:" + location.pathname, "1"));
        await page.waitForLoadState("networkidle").catch(() => {});
        if (path.startsWith("/view/")) {
          await page.waitForFunction(() => window.grassrootsViewerStatus
            && window.grassrootsViewerStatus.tilesLoaded > 0, null, { timeout: 20000 });
        }
        const seen = await inspect(page, viewportName);
        const shot = `${SHOTS}/${viewportName}-${account.node}-${account.user}${path.replace(/[^a-z0-9]+/gi, "-")}.png`;
        await page.screenshot({ path: shot, fullPage: true });
        report.pages.push(Object.assign({ viewport: viewportName, node: account.node, user: account.user, path },
                                        seen));
      }
      await context.close();
    }
  }

  // The consult before the case is taken: a hint and the button, no empty viewer. A second
  // expert who opened it too is told who took it first.
  const consult = `/consult/${REFERRAL_ID}`;
  const first = await browser.newContext(viewports.phone);
  // The second expert reads Chinese: the server's refusal comes in Chinese too.
  const second = await browser.newContext(Object.assign({ locale: "zh-CN" }, viewports.desktop));
  const zhang = await signIn(first, HUB_URL, "prof-zhang", consult);
  const chen = await signIn(second, HUB_URL, "dr-chen", consult);
  report.consult.hint = await zhang.locator("#consult-hint").textContent();
  report.consult.viewerBeforeClaim = await zhang.locator("#viewer").count();
  report.consult.before = await inspect(zhang, "phone");
  await zhang.screenshot({ path: `${SHOTS}/phone-hub-consult-not-taken.png`, fullPage: true });
  await Promise.all([zhang.waitForNavigation(), zhang.click("#claim")]);
  await zhang.waitForFunction(() => window.grassrootsViewerStatus
    && window.grassrootsViewerStatus.tilesLoaded > 0, null, { timeout: 30000 });
  report.consult.viewerAfterClaim = await zhang.locator("#viewer").count();
  report.consult.after = await inspect(zhang, "phone");
  await zhang.screenshot({ path: `${SHOTS}/phone-hub-consult-taken.png`, fullPage: true });
  await chen.click("#claim");
  await chen.waitForSelector("#claim-error", { timeout: 10000 });
  report.consult.secondClaim = await chen.locator("#claim-error").textContent();
  await chen.screenshot({ path: `${SHOTS}/desktop-hub-consult-second-claim.png`, fullPage: true });

  // Chinese: from the browser's language, then from the account's own choice.
  async function words(page, path, base) {
    await page.goto(`${base}${path}`);
    await page.evaluate(() => sessionStorage.setItem("grassroots-paused:" + location.pathname, "1"));
    return page.evaluate(() => ({
      lang: document.documentElement.lang,
      h1: document.querySelector("h1").textContent,
      nav: Array.from(document.querySelectorAll(".site-nav a")).map((a) => a.textContent),
      headings: Array.from(document.querySelectorAll("th")).map((th) => th.textContent),
      empty: Array.from(document.querySelectorAll("td.empty")).map((td) => td.textContent),
      // Sentences the page wrote in English: two or more English function words in a
      // paragraph, item or term's text that is not data (translate="no", code) or a name.
      english: Array.from(document.querySelectorAll("main p, main li, main dd, main small, main td"))
        .filter((e) => !e.closest("[translate=no], pre, code, .name"))
        .map((e) => e.textContent.trim())
        .filter((t) => (t.match(/\b(the|and|of|to|is|are|its|this|from|with|for|an|when|has|have|be|not|will|here)\b/gi) || []).length >= 2),
      times: Array.from(document.querySelectorAll("time")).map((t) => t.textContent),
    }));
  }
  const chinese = await browser.newContext(Object.assign({ locale: "zh-CN" }, viewports.phone));
  const li = await signIn(chinese, EDGE_URL, "dr-li", "/worklist");
  report.chinese = [];
  for (const path of ["/worklist", "/slides", "/cases", "/studies", "/referrals", "/federated", "/"]) {
    report.chinese.push(Object.assign({ path }, await words(li, path, EDGE_URL)));
    await li.screenshot({ path: `${SHOTS}/phone-zh-edge${path.replace(/\//g, "-")}.png`, fullPage: true });
  }
  const chineseHub = await signIn(chinese, HUB_URL, "root", "/referrals");
  for (const path of ["/referrals", "/sites", "/models", "/rounds", "/coverage", "/transfers", "/security"]) {
    report.chinese.push(Object.assign({ path }, await words(chineseHub, path, HUB_URL)));
    await chineseHub.screenshot({ path: `${SHOTS}/phone-zh-hub${path.replace(/\//g, "-")}.png`, fullPage: true });
  }
  await chinese.close();
  const english = await browser.newContext(viewports.desktop);
  const wu = await signIn(english, EDGE_URL, "it-wu", "/slides");
  await Promise.all([wu.waitForNavigation(), wu.click(".lang-switch button")]);
  report.switched = await words(wu, "/slides", EDGE_URL);
  await english.close();
  // The choice is the account's: another browser, in English, shows it Chinese once signed in.
  const elsewhere = await browser.newContext(viewports.desktop);
  const again = await signIn(elsewhere, EDGE_URL, "it-wu", "/cases");
  report.switchedElsewhere = await words(again, "/cases", EDGE_URL);
  await elsewhere.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
