// Headless Chromium as the browser tests drive it: the system's Chromium through
// playwright-core, quiet (no network of its own, no first-run work).
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

exports.launch = () => chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
