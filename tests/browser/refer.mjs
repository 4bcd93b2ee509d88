// Drives Debian's Chromium (playwright-core) through the edge's referral form: a question that
// names the patient is refused with the reason beside the button; the corrected form shows what
// will cross before anything is sent; "Send to the hub" then opens the referral's page.
// Environment: EDGE_URL, USERNAME, PASSWORD, SLIDE_ID [, CHROMIUM].
import { chromium } from "playwright-core";

const { EDGE_URL, USERNAME, PASSWORD, SLIDE_ID } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${EDGE_URL}/referrals`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL("**/referrals"), page.click("button[type=submit]")]);
  await page.fill("input[name=case_number]", "S26-01234");
  await page.fill("input[name=patient_name]", "Wang Xiuying");
  await page.fill("input[name=patient_id]", "ID-330106-1977");
  await page.fill("input[name=age_years]", "47");
  await page.fill("input[name=specimen]", "gastric biopsy, antrum");
  await page.fill("textarea[name=question]", "Is this Wang Xiuying's recurrence?");
  await page.check(`input[name=slide][value="${SLIDE_ID}"]`);
  await page.click("#refer-form button[type=submit]");
  // The refusal shows beside the button that was pressed.
  await page.waitForSelector("#refer-review-button-error");
  const refusal = await page.textContent("#refer-review-button-error");
  const reviewHiddenAfterRefusal = await page.isHidden("#refer-review");
  await page.fill("textarea[name=question]", "High-grade dysplasia or early carcinoma?");
  await page.click("#refer-form button[type=submit]");
  await page.waitForSelector("#refer-review", { state: "visible" });
  const crosses = await page.textContent("#refer-crosses");
  await Promise.all([page.waitForURL("**/referrals/*"), page.click("#refer-send")]);
  console.log(JSON.stringify({ refusal, reviewHiddenAfterRefusal, crosses, landed: page.url(), errors }));
} finally {
  await browser.close();
}
