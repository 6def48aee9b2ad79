// Opens an unsubscribe link in headless Chromium as a parent would: sees the confirmation,
// clicks the button, sees the result, follows its link to the preference page. Exits
// non-zero on any mismatch.
// usage: PLAYWRIGHT_CORE=/path/to/node_modules/playwright-core node unsubscribe_browser.cjs URL
const { launch } = require('./chromium.cjs');

(async () => {
  const url = process.argv[2];
  const browser = await launch();
  try {
    const page = await browser.newPage({ javaScriptEnabled: false });
    await page.goto(url);
    const question = await page.textContent('body');
    if (!question.includes('Stop receiving session report emails?')) {
      throw new Error(`no confirmation on the page: ${question}`);
    }
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    const result = await page.textContent('body');
    if (!result.includes('You are unsubscribed')) {
      throw new Error(`no result on the page: ${result}`);
    }
    // The way back: the result's link leads to the preference page, report emails now off.
    await Promise.all([page.waitForNavigation(), page.click('a:has-text("Choose what you receive")')]);
    const preferences = await page.textContent('body');
    if (!preferences.includes('Choose what you receive')
        || await page.isChecked('input[name=session_reports]')) {
      throw new Error(`no preference page with reports off: ${preferences}`);
    }
    console.log('confirmed and unsubscribed');
  } finally {
    await browser.close();
  }
})().catch((err) => {
  console.error(err.message || err);
  process.exit(1);
});
