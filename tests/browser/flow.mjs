// The operator's whole path through the web page in a real browser (Debian's chromium,
// headless, driven by playwright-core), against the appliance booted in QEMU. The Rust test
// (tests/tests/browser.rs) runs this in the client namespace and checks the traffic: this
// script prints `STEP <name>` at each point where the lab must look, and waits for a line on
// stdin before going on. Screenshots of each page go to $OUT.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const { BASE, CODE, OUT, VIP, RIP1, RIP2, DIP, GATEWAY, PEER, BUNDLE, NEW_VERSION } = process.env;
const PASSWORD = 'correct horse battery';
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function step(name) {
  console.log(`STEP ${name}`);
  const l = await lines.next();
  if (l.done || l.value.trim() !== 'go') throw new Error(`the test said ${JSON.stringify(l.value)} after ${name}`);
}
function check(cond, what) { if (!cond) throw new Error(what); }
// Press "Save and apply" and wait for the box's answer to that very request.
async function save(page) {
  const answer = page.waitForResponse((r) => r.url().endsWith('/api/config') && r.request().method() === 'PUT', { timeout: 90000 });
  await page.getByRole('button', { name: 'Save and apply' }).click();
  return (await answer).status();
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 900 } });
  const page = await ctx.newPage();
  const external = [];
  page.on('request', (r) => { if (!r.url().startsWith(BASE)) external.push(r.url()); });
  page.on('dialog', (d) => d.accept());
  const shot = (name) => page.screenshot({ path: `${OUT}/${name}.png`, fullPage: true });

  // First boot: the setup code from the console and a new password.
  await page.goto(`${BASE}/`);
  await page.getByLabel('Setup code').waitFor();
  await shot('01-first-boot-setup');
  await page.getByLabel('Setup code').fill(CODE);
  await page.getByLabel('New password (10 characters or more)').fill(PASSWORD);
  await page.getByRole('button', { name: 'Set password' }).click();
  await page.locator('#mode').filter({ hasText: /\w/ }).waitFor();

  // Log out and in again.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('Password', { exact: true }).fill('wrong password here');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('.err[data-for="password"]', { hasText: 'wrong password' }).waitFor();
  await shot('02-login-wrong-password');
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#mode').filter({ hasText: /\w/ }).waitFor();

  // Configure: the DIP, a VIP, two real servers.
  await page.getByRole('button', { name: 'Configure' }).click();
  await page.getByLabel('DIP (address/prefix on the real servers\' segment)').fill(`${DIP}/24`);
  await page.getByLabel('Gateway (the router)').fill(GATEWAY);
  await page.getByRole('button', { name: 'Add service' }).click();
  // An XSS payload where an address goes: refused beside the field, shown as text.
  await page.locator('#svc0-vip').fill('<img src=x onerror="document.title=\'owned\'">');
  await page.locator('#svc0-rs0-address').fill(RIP1);
  check((await save(page)) === 400, 'the payload was accepted');
  const vipErr = page.locator('.err[data-for="services[0].vip"]');
  await vipErr.filter({ hasText: 'onerror' }).waitFor();
  check((await page.locator('form img').count()) === 0 && (await page.title()) !== 'owned', 'the payload became markup');
  await shot('03-config-field-error');
  await page.locator('#svc0-vip').fill(VIP);
  await page.locator('#svc0-add-rs').click();
  await page.locator('#svc0-rs1-address').fill(RIP2);
  check((await save(page)) === 200, 'the config was not accepted');
  await page.locator('#notice', { hasText: 'config saved and applied' }).waitFor();
  await shot('04-config-saved');
  await step('saved');

  // Weight 0 drains the second real server.
  await page.locator('#svc0-rs1-weight').fill('0');
  check((await save(page)) === 200, 'the weight change was not accepted');
  await step('drained');

  // The status page shows the counters moving (it refreshes by itself).
  await page.getByRole('button', { name: 'Status' }).click();
  const cell = page.locator(`td[data-rs="${RIP1}"]`);
  await cell.waitFor();
  const before = Number(await cell.getAttribute('data-packets'));
  await step('counters');
  let after = before;
  for (let i = 0; i < 40 && after <= before; i += 1) {
    await page.waitForTimeout(500);
    after = Number(await cell.getAttribute('data-packets'));
  }
  check(after > before, `rs1's packet counter did not move: ${before} -> ${after}`);
  console.log(`COUNTERS ${before} ${after}`);
  // The charts: rs1's line in both (packets/s and connections), drawn from the box's history
  // (a point every 5 s), its latest rate in the legend.
  await page.locator(`svg.chart polyline[data-server="${RIP1}"]`).first().waitFor({ timeout: 60000 });
  check((await page.locator(`svg.chart polyline[data-server="${RIP1}"]`).count()) === 2, 'rs1 is not in both charts');
  await page.locator('p.legend .key', { hasText: `${RIP1} ` }).filter({ hasText: 'pkt/s' }).first().waitFor();
  await shot('05-status');
  // The same page on a phone-sized screen: nothing needs horizontal scrolling of the page.
  await page.setViewportSize({ width: 390, height: 844 });
  await shot('05b-status-phone');
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  check(wide <= 400, `the page is ${wide} px wide on a 390 px screen`);
  await page.setViewportSize({ width: 1100, height: 900 });

  // The connection list, filtered by VIP: the flows of that traffic, with their real server.
  await page.locator('#conn-vip').fill(VIP);
  await page.locator('#conn-show').click();
  await page.locator('#connections tbody tr', { hasText: `${VIP}:80` }).filter({ hasText: RIP1 }).first().waitFor({ timeout: 30000 });
  await page.locator('#conn-summary', { hasText: 'entries (forwarder)' }).waitFor();
  await shot('05f-connections');

  // A health check from the page: a timeout longer than the interval is refused beside its
  // field; fixed, it is saved. The lab stops rs2's service; the status page shows it down,
  // with why, and the event.
  await page.getByRole('button', { name: 'Configure' }).click();
  await page.locator('#svc0-hc-type').selectOption('http');
  await page.locator('#svc0-hc-interval_ms').fill('500');
  await page.locator('#svc0-hc-timeout_ms').fill('800');
  check((await save(page)) === 400, 'a timeout longer than the interval was accepted');
  await page.locator('.err[data-for="services[0].health_check.timeout_ms"]', { hasText: 'must not exceed interval_ms' }).waitFor();
  await shot('05c-health-check-field-error');
  await page.locator('#svc0-hc-timeout_ms').fill('500');
  check((await save(page)) === 200, 'the health check was not accepted');
  await step('checked');
  await page.getByRole('button', { name: 'Status' }).click();
  await page.locator(`td[data-health="${RIP2}"]`, { hasText: 'DOWN · connection refused' }).waitFor({ timeout: 60000 });
  await page.locator(`td[data-health="${RIP1}"]`, { hasText: 'UP · check passed' }).waitFor();
  await page.locator('#health-events li', { hasText: `${RIP2}: up → down: connection refused` }).waitFor();
  await shot('05d-health-down');

  // The event log: the transition is there under "health", the wrong password of the start
  // under "login", and the download holds them as lines.
  await page.getByRole('button', { name: 'Events' }).click();
  await page.locator('#events-kind').selectOption('health');
  await page.locator('#events li[data-kind="health"]', { hasText: `${RIP2}: up -> down: connection refused` }).waitFor({ timeout: 30000 });
  // The list is replaced when the filtered answer arrives: then nothing else is in it.
  await page.locator('#events li:not([data-kind="health"])').first().waitFor({ state: 'detached' });
  await page.locator('#events-kind').selectOption('');
  await page.locator('#events li[data-kind="login"]', { hasText: 'failed login from' }).first().waitFor();
  await page.locator('#events-text').fill(RIP2);
  await page.locator('#events li', { hasText: 'failed login' }).first().waitFor({ state: 'detached' });
  await page.locator('#events li', { hasText: `${RIP2}: up -> down` }).first().waitFor();
  await shot('05e-events');
  await page.locator('#events-text').fill('');
  const [dl] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download as text' }).click()]);
  const { readFile } = await import('node:fs/promises');
  const text = await readFile(await dl.path(), 'utf8');
  check(/ warning login: failed login from /.test(text), `the download lacks the failed login: ${text.slice(0, 400)}`);
  check(text.includes(`warning health: tcp ${VIP}:80 ${RIP2}: up -> down: connection refused`), 'the download lacks the health event');

  // A packet capture from the page: ARP on the RS-facing NIC for a few seconds (netfw asks
  // each real server's MAC every 5 s), downloaded as a pcap; a bad host is refused first.
  await page.getByRole('button', { name: 'Maintenance' }).click();
  await page.locator('#cap-nic').selectOption('rs_side');
  await page.locator('#cap-filter').selectOption('host');
  await page.locator('#cap-value').fill('not-an-address');
  await page.getByRole('button', { name: 'Capture and download (.pcap)' }).click();
  await page.locator('#notice', { hasText: 'is not an IPv4 address' }).waitFor({ timeout: 30000 });
  await page.locator('#cap-filter').selectOption('arp');
  await page.locator('#cap-value').fill('');
  await page.locator('#cap-packets').fill('20');
  await page.locator('#cap-seconds').fill('6');
  const [cap] = await Promise.all([
    page.waitForEvent('download', { timeout: 60000 }),
    page.getByRole('button', { name: 'Capture and download (.pcap)' }).click(),
  ]);
  const pcap = await readFile(await cap.path());
  check(pcap.length > 24 && pcap.readUInt32LE(0) === 0xa1b2c3d4, `not a pcap file (${pcap.length} bytes)`);
  await page.locator('#notice', { hasText: 'frame(s) captured' }).waitFor();
  await shot('05f-capture');

  // The box joins an HA pair from the page: a key too short is refused beside its field;
  // fixed, it is saved. No peer answers, so it becomes master by itself, and says why.
  await page.getByRole('button', { name: 'Configure' }).click();
  await page.locator('#cfg-ha-on').check();
  await page.getByLabel('Peer (the other box\'s DIP)').fill(PEER);
  await page.locator('#cfg-ha-priority').fill('150');
  await page.locator('#cfg-ha-key').fill('too short');
  check((await save(page)) === 400, 'a short key was accepted');
  await page.locator('.err[data-for="ha.key"]', { hasText: 'the shared key must be 12' }).waitFor();
  await shot('05e-ha-field-error');
  await page.locator('#cfg-ha-key').fill('a shared secret');
  check((await save(page)) === 200, 'the HA section was not accepted');
  await page.getByRole('button', { name: 'Status' }).click();
  await page.locator('#ha h3[data-ha-state="master"]').waitFor({ timeout: 60000 });
  await page.locator('#ha li', { hasText: `Peer ${PEER}: no advert heard yet` }).waitFor();
  await page.locator('#ha li', { hasText: 'no advert from the master' }).waitFor();
  await page.locator('#warnings li', { hasText: `the HA peer ${PEER} does not answer ARP` }).waitFor();
  await shot('05f-ha-master-alone');
  await step('paired');

  // The commands for the real servers, and the maintenance page.
  await page.getByRole('button', { name: 'Real-server setup' }).click();
  await page.locator('#rs-setup pre', { hasText: `ip addr add ${VIP}/32 dev lo` }).first().waitFor();
  await shot('06-real-server-setup');
  await page.getByRole('button', { name: 'Maintenance' }).click();
  await page.locator('#sys-summary', { hasText: 'from slot A' }).waitFor();
  const old = (await page.locator('#sys-summary').textContent()).split(' ')[1];
  await shot('07-maintenance');

  // An update from the page: the bundle uploads with a progress bar, the box reboots into it
  // on trial; afterwards the new system runs from slot B, and the config is still there.
  await page.getByLabel(/Update bundle/).setInputFiles(BUNDLE);
  await page.getByRole('button', { name: 'Upload and update' }).click();
  await page.locator('#notice', { hasText: 'rebooting into it for a trial' }).waitFor({ timeout: 120000 });
  check((await page.locator('#update-progress').getAttribute('value')) === '100', 'the progress bar did not reach the end');
  await shot('08-update-uploaded');
  await step('updating');
  await page.goto(`${BASE}/`);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('button', { name: 'Configure' }).click();
  await page.locator('#svc0-rs1-address').waitFor();
  check((await page.locator('#svc0-vip').inputValue()) === VIP, 'the VIP did not survive the reboot');
  check((await page.locator('#svc0-rs1-address').inputValue()) === RIP2, 'the second real server did not survive');
  check((await page.locator('#svc0-rs1-weight').inputValue()) === '0', 'the drain did not survive');
  check((await page.locator('#svc0-hc-type').inputValue()) === 'http', 'the health check did not survive');
  check(await page.locator('#cfg-ha-on').isChecked(), 'the HA section did not survive');
  check((await page.locator('#cfg-ha-peer').inputValue()) === PEER, 'the peer did not survive');
  await page.getByRole('button', { name: 'Maintenance' }).click();
  await page.locator('#sys-summary', { hasText: `Running ${NEW_VERSION} from slot B` }).waitFor();
  await page.locator('#sys-last', { hasText: `updated from ${old} to ${NEW_VERSION}` }).waitFor();
  await shot('09-after-update');

  // Back to the old system from the page.
  await page.getByRole('button', { name: `Boot ${old} (slot A)` }).click();
  await page.locator('#notice', { hasText: 'rebooting' }).waitFor();
  await step('switching');
  await page.goto(`${BASE}/`);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('button', { name: 'Maintenance' }).click();
  await page.locator('#sys-summary', { hasText: `Running ${old} from slot A` }).waitFor();
  await shot('10-switched-back');
  check(external.length === 0, `the page made requests elsewhere: ${external.join(' ')}`);
  console.log('DONE');
} catch (e) {
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    console.log(`at failure (${String(e.message).split('\n')[0]}): ${p.url()}: ${await p.locator('#notice').textContent().catch(() => '')} | ${await p.locator('#config-error').textContent().catch(() => '')}`);
    await p.screenshot({ path: `${OUT}/failure.png`, fullPage: true }).catch(() => {});
  }
  throw e;
} finally {
  await browser.close();
}
process.exit(0);
