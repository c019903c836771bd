// The Temporal web UI in headless Chromium, as a person who authorised this browser at the codec server. One load
// of the UI page: it is most of the test's CPU (the test checks a stranger's refusal over plain HTTP).
// Usage: node decoded_input.mjs CONFIG_JSON
//   config: workflow_url; expect (clear text of the input); login_url + secret (the codec server's login form; it
//           sets a cookie); codec_endpoint; chromium; profile_dir; timeout_ms
// Prints one JSON line: {person: {clear}, error?}
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);
const timeout = cfg.timeout_ms || 15000;
const result = { person: {} };
const context = await chromium.launchPersistentContext(cfg.profile_dir, {
  executablePath: cfg.chromium || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const seen = async (page, text, ms) => {
  try {
    await page.waitForFunction((t) => document.body && document.body.innerText.includes(t), text, { timeout: ms, polling: 250 });
    return true;
  } catch (e) {
    return false;
  }
};
try {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(timeout);

  // a person authorises this browser at the codec server (its login sets a cookie), and in the UI's codec
  //    settings sets the endpoint with "Include cross-origin credentials" on (the UI keeps that in localStorage)
  await page.goto(cfg.login_url, { waitUntil: 'load' });
  await page.fill('input[name=token]', cfg.secret);
  await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')]);
  await context.addInitScript((endpoint) => {
    window.localStorage.setItem('endpoint', JSON.stringify(endpoint));
    window.localStorage.setItem('overrideRemoteCodecConfiguration', 'true');
    window.localStorage.setItem('includeCredentials', 'true');
  }, cfg.codec_endpoint);
  await page.goto(cfg.workflow_url, { waitUntil: 'load' });
  result.person.clear = await seen(page, cfg.expect, timeout);
  if (!result.person.clear) result.person.text = (await page.locator('body').innerText()).slice(0, 3000);
} catch (e) {
  result.error = String(e).split('\n')[0];
} finally {
  await context.close();
}
console.log(JSON.stringify(result));
