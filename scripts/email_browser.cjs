// Renders email HTML in headless Chromium, with scripts off as mail clients have them, at
// 375 and 800 px wide, and checks what a parent must see: no horizontal scrolling, every
// name visible, the unsubscribe link there, the inbox's preview line hidden, no script
// element. Exits non-zero on a miss.
// usage: PLAYWRIGHT_CORE=… node email_browser.cjs CHECKS.json
//   CHECKS.json: [{"file": "report.html", "names": ["Ada", …]}, …]
const fs = require('fs');
const { launch } = require('./chromium.cjs');

(async () => {
  const checks = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const browser = await launch();
  const problems = [];
  try {
    for (const check of checks) {
      const html = fs.readFileSync(check.file, 'utf8');
      for (const width of [375, 800]) {
        const page = await browser.newPage({ javaScriptEnabled: false, viewport: { width, height: 900 } });
        await page.setContent(html);
        const where = `${check.file} at ${width} px`;
        const scroll = await page.evaluate(() => document.documentElement.scrollWidth);
        if (scroll > width) problems.push(`${where}: scrolls sideways (${scroll} px wide)`);
        const text = await page.innerText('body');
        for (const name of check.names) {
          if (!text.includes(name)) problems.push(`${where}: "${name}" not shown`);
          // The hidden preheader names them too: one match must be visible.
          let shown = false;
          for (const match of await page.getByText(name, { exact: false }).all()) {
            shown = shown || (await match.isVisible());
          }
          if (!shown) problems.push(`${where}: "${name}" not visible`);
        }
        const unsubscribe = await page.locator('a[href*="/api/v1/email/unsubscribe/"]').count();
        if (unsubscribe !== 1) problems.push(`${where}: ${unsubscribe} unsubscribe links`);
        // The inbox's preview line is in the HTML, and never shown in the email itself.
        const preheader = page.locator('.preheader');
        if ((await preheader.count()) !== 1) problems.push(`${where}: no preheader`);
        else if (await preheader.isVisible()) problems.push(`${where}: the preheader shows`);
        // The report's answers bar, when it has one, is seen whole.
        const bar = page.locator('table.answers');
        if ((await bar.count()) === 1) {
          const box = await bar.boundingBox();
          if (!box || box.width < 100 || box.x + box.width > width) {
            problems.push(`${where}: the answers bar is not seen whole (${JSON.stringify(box)})`);
          }
        }
        const scripts = await page.locator('script').count();
        if (scripts !== 0) problems.push(`${where}: ${scripts} script elements`);
        await page.close();
      }
    }
  } finally {
    await browser.close();
  }
  if (problems.length) {
    console.error(problems.join('\n'));
    process.exit(1);
  }
  console.log(`${checks.length} emails checked at 375 and 800 px`);
})().catch((err) => {
  console.error(err.message || err);
  process.exit(1);
});
