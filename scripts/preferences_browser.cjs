// Opens a preference page in headless Chromium, scripts off, as a parent would from their
// email: sees both switches on, turns the weekly digest off, saves, reads the confirmation;
// then opens the link again and turns the digest back on (a re-subscribe). Prints the first
// form's nonce (for the test's replay). Exits non-zero on any mismatch.
// usage: PLAYWRIGHT_CORE=/path/to/node_modules/playwright-core node preferences_browser.cjs URL
const { launch } = require('./chromium.cjs');

(async () => {
  const url = process.argv[2];
  const browser = await launch();
  try {
    const page = await browser.newPage({ javaScriptEnabled: false, viewport: { width: 375, height: 800 } });
    await page.goto(url);
    const shown = await page.textContent('body');
    if (!shown.includes('Your email preferences')) throw new Error(`not the preference page: ${shown}`);
    const reports = page.locator('input[name=session_reports]');
    const digest = page.locator('input[name=weekly_digest]');
    if (!(await reports.isChecked()) || !(await digest.isChecked())) {
      throw new Error('both switches should start on');
    }
    const nonce = await page.locator('input[name=nonce]').getAttribute('value');
    await digest.uncheck();
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    const result = await page.textContent('body');
    if (!result.includes('Your preferences are saved') || !result.includes('Weekly digest: off')
        || !result.includes('Session reports: on')) {
      throw new Error(`no confirmation: ${result}`);
    }
    // Changed their mind: the same link again, the digest back on.
    await page.goto(url);
    if (!(await reports.isChecked()) || (await digest.isChecked())) {
      throw new Error('the page should show the digest off and reports on');
    }
    await digest.check();
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    const again = await page.textContent('body');
    if (!again.includes('Your preferences are saved') || !again.includes('Weekly digest: on')) {
      throw new Error(`no confirmation of the re-subscribe: ${again}`);
    }
    console.log(nonce);
  } finally {
    await browser.close();
  }
})().catch((err) => {
  console.error(err.message || err);
  process.exit(1);
});
