// The pages as a person uses them, in headless Chromium (Debian's), driven
// by playwright-core. Run by tests/it/browser.rs, which starts the server,
// registers the clients and accounts, and passes everything through the
// environment; this script exits non-zero on the first failed check.
//
//   SLCS_URL        https://localhost:<port>
//   PORTAL_CB       the portal's redirect URI (answered here, never fetched)
//   PORTAL_SECRET   the portal's client secret (for its /token calls)
//   AUTHORIZE_PATH  the portal's /authorize?… with an S256 challenge
//   VERIFIER        the PKCE verifier of that challenge
//   EVIL_AUTHORIZE_PATH  /authorize?… for a client whose name and
//                   description are HTML/JS payloads
//   WPS_SECRET, BROKER_A_SECRET  the delegatees' client secrets
//   CSR_PEM         broker A's certificate request
//   GUEST_AUTHORIZE_PATH  the portal's /authorize?… for a guest
//   PASSWORD        every account's password
//   ADMIN_USERNAME, TOTP_SECRET  an administrator and her TOTP secret
//   PENDING_CLIENT, PENDING_NAME, PENDING_SECRET  a client waiting for
//                   approval: its id, its name (an HTML/JS payload), its secret
//   SCREENSHOTS     directory for PNGs of the pages (optional)
//   CHROMIUM        the browser (default /usr/bin/chromium)
//
// Node's own HTTPS calls (the portal's token requests) trust the server
// through NODE_EXTRA_CA_CERTS; Chromium is told to accept the development
// certificate, since a fresh profile cannot be given an extra root.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import http from "node:http";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set`);
  return value;
};
const base = env("SLCS_URL");
const portalCb = env("PORTAL_CB");
const password = env("PASSWORD");
const shots = process.env.SCREENSHOTS;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // A closed network: nothing may phone home (Playwright gives every
  // launch a fresh, temporary profile).
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});

/** A fresh person: own cookies, a phone-sized or desktop window. */
async function person(viewport = { width: 1000, height: 900 }) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport });
  const page = await context.newPage();
  // Any dialog means a payload ran: recorded, dismissed, failed at the end.
  const dialogs = [];
  page.on("dialog", async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  return { context, page, dialogs };
}

/** Presses Tab until `predicate(activeElement)` holds; fails after 40. */
async function tabTo(page, description, predicate) {
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(predicate)) return;
  }
  assert.fail(`Tab never reached ${description}`);
}

async function shot(page, name) {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

/** A form POST to slcs as client `id` (HTTP Basic), as that client's
 * back end would make it; the status and the JSON answer. */
async function post(path, form, id = "portal", secret = env("PORTAL_SECRET"), bearer = null) {
  const headers = { "Content-Type": "application/x-www-form-urlencoded" };
  if (bearer) {
    headers.Authorization = `Bearer ${bearer}`;
  } else {
    headers.Authorization = `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`;
  }
  const response = await fetch(`${base}${path}`, { method: "POST", headers, body: new URLSearchParams(form) });
  const text = await response.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: response.status, body };
}
const token = (form) => post("/token", form);

/** RFC 8693 exchange of `subject` by client `id`. */
async function exchange(id, secret, subject, extra = {}) {
  const answer = await post(
    "/token",
    {
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      subject_token: subject,
      subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
      ...extra,
    },
    id,
    secret,
  );
  assert.equal(answer.status, 200, `${id}: ${JSON.stringify(answer.body)}`);
  return answer.body.access_token;
}

/** RFC 4648 base32 (no padding) to bytes. */
function base32(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const out = [];
  let buffer = 0;
  let bits = 0;
  for (const c of text) {
    const index = alphabet.indexOf(c);
    assert.ok(index >= 0, `not base32: ${c}`);
    buffer = ((buffer << 5) | index) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((buffer >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** The TOTP code (RFC 6238: HMAC-SHA-1, 30 s, six digits) of `secret`
 * now, computed here with Node's crypto, independently of slcs. */
function totp(secret) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const mac = crypto.createHmac("sha1", base32(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

const results = {};

// 1. Keyboard only: sign in, approve with every delegatee, revoke.
{
  const { context, page, dialogs } = await person();
  await page.goto(base + env("AUTHORIZE_PATH"));
  await page.waitForSelector("form[action='/login']");
  await shot(page, "login");
  await tabTo(page, "the username field", () => document.activeElement?.id === "username");
  await page.keyboard.type("alice");
  await tabTo(page, "the password field", () => document.activeElement?.id === "password");
  await page.keyboard.type(password);
  await page.keyboard.press("Enter");
  await page.waitForSelector("form[action='/authorize/consent']");
  assert.match(await page.locator("h1").innerText(), /^Approve Climate Portal/);
  // Every declared delegatee is shown, ticked by default.
  const ticked = await page.locator("input[type=checkbox][name^='delegatee.']:checked").count();
  assert.equal(ticked, 3, "wps, broker-a and broker-b are offered");
  await shot(page, "consent");
  await tabTo(
    page,
    "the Approve button",
    () => document.activeElement?.tagName === "BUTTON" && document.activeElement.value === "approve",
  );
  // The answer is a redirect to the portal, which is not on this network:
  // its address is read off the request (Playwright does not route the
  // targets of redirects, so the navigation itself fails).
  const [toPortal] = await Promise.all([
    page.waitForEvent("requestfailed", (request) => request.url().startsWith(portalCb)),
    page.keyboard.press("Enter"),
  ]);
  // Let Chromium finish showing its error page before the next navigation.
  await page.waitForURL(/^chrome-error:/, { timeout: 5000 }).catch(() => {});
  const answer = new URL(toPortal.url());
  const code = answer.searchParams.get("code");
  assert.ok(code, `no code in ${answer}`);
  assert.ok(answer.searchParams.get("iss"), "RFC 9207: the answer names its issuer");

  // The portal redeems the code and holds a refresh token.
  const redeemed = await token({
    grant_type: "authorization_code",
    code,
    redirect_uri: portalCb,
    code_verifier: env("VERIFIER"),
  });
  assert.equal(redeemed.status, 200, JSON.stringify(redeemed.body));
  assert.ok(redeemed.body.refresh_token, "offline_access gives a refresh token");

  // Down the chain, as the services' back ends would: the portal hands its
  // token to the processing service, which shares one with broker A, which
  // gets a certificate for its own key, authenticating as itself.
  const t1 = await exchange("portal", env("PORTAL_SECRET"), redeemed.body.access_token, { audience: "wps" });
  const t2 = await exchange("wps", env("WPS_SECRET"), t1);
  const t3 = await exchange("wps", env("WPS_SECRET"), t2, { audience: "broker-a" });
  const issued = await post(
    "/certificate",
    { certificate_request: env("CSR_PEM"), client_id: "broker-a", client_secret: env("BROKER_A_SECRET") },
    null,
    null,
    t3,
  );
  assert.equal(issued.status, 200, JSON.stringify(issued.body));
  assert.match(issued.body, /BEGIN CERTIFICATE/);

  // The account page shows the approval with its chain.
  await page.goto(`${base}/account`);
  await page.waitForSelector("h2");
  const account = await page.locator("main").innerText();
  for (const shown of [
    "Climate Portal",
    "wps",
    "broker-a",
    "broker-b",
    // Her recent activity follows the chain.
    "portal passed a token on to wps",
    "wps now acts for you along portal → wps",
    "wps passed a token on to broker-a",
  ]) {
    assert.ok(account.includes(shown), `the account page lacks ${shown}`);
  }
  // The broker's certificate, seen by the person, with the chain it came
  // down and a download of it.
  await page.locator("details summary").first().click();
  const certificates = await page.locator("details").first().innerText();
  assert.match(certificates, /1 certificate issued under it/);
  assert.match(certificates, /valid, until .* presented by broker-a: .* ⇐ portal ⇐ wps ⇐ broker-a/, certificates);
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.locator("details a[download]").first().click(),
  ]);
  const pem = await (await download.createReadStream()).toArray();
  assert.match(Buffer.concat(pem).toString(), /^-----BEGIN CERTIFICATE-----/);
  // Drawn as the chain it is: the portal hands work to the service, the
  // service to the brokers.
  const chain = await page.locator(".approval .chain").first().innerText();
  assert.match(chain, /^Climate Portal portal → Processing service wps → Job broker A broker-a, Job broker B broker-b$/, chain);
  await shot(page, "account");
  // The page to narrow or extend the approval lists what each hop may
  // receive, every box ticked.
  const editHref = await page.locator("a", { hasText: "Change…" }).first().getAttribute("href");
  await page.goto(base + editHref);
  assert.match(await page.locator("h1").innerText(), /^Change your approval of Climate Portal$/);
  assert.ok((await page.locator("input[type=checkbox]:checked").count()) >= 6, "three scopes and three delegatees");
  await shot(page, "approval");
  await page.goto(`${base}/account`);
  await page.waitForSelector("h2");
  await tabTo(
    page,
    "the Revoke… link",
    () => document.activeElement?.tagName === "A" && document.activeElement.innerText.trim() === "Revoke…",
  );
  await Promise.all([page.waitForURL(/\/revoke$/), page.keyboard.press("Enter")]);
  // The confirmation names what ends, then the button does it.
  assert.match(await page.locator("h1").innerText(), /^Revoke Climate Portal\?$/);
  assert.match(await page.locator("main").innerText(), /1 valid certificate is marked revoked/);
  await shot(page, "revoke");
  await tabTo(
    page,
    "the Revoke button",
    () => document.activeElement?.tagName === "BUTTON" && document.activeElement.innerText.trim() === "Revoke",
  );
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")]);
  const revoked = await page.locator("main").innerText();
  assert.match(revoked, /revoked/i, revoked);
  await page.goto(`${base}/account`);
  const after = await page.locator("main").innerText();
  assert.ok(!after.includes("Revoke…"), "no live approval is left to revoke");

  // The portal's next refresh fails: the approval behind it is gone.
  const refreshed = await token({ grant_type: "refresh_token", refresh_token: redeemed.body.refresh_token });
  assert.equal(refreshed.status, 400, JSON.stringify(refreshed.body));
  assert.equal(refreshed.body.error, "invalid_grant");
  assert.deepEqual(dialogs, []);
  results.keyboard = "ok";
  await context.close();
}

// 1b. A guest is refused by a portal that does not admit guests
//     (accessDeniedToGuests): the portal hears access_denied, nothing else.
{
  const { context, page } = await person();
  await page.goto(base + env("GUEST_AUTHORIZE_PATH"));
  await page.waitForSelector("form[action='/login']");
  await page.fill("#username", "gus");
  await page.fill("#password", password);
  const [toPortal] = await Promise.all([
    page.waitForEvent("requestfailed", (request) => request.url().startsWith(portalCb)),
    page.click("button[type=submit]"),
  ]);
  const answer = new URL(toPortal.url());
  assert.equal(answer.searchParams.get("error"), "access_denied", answer.href);
  assert.equal(answer.searchParams.get("code"), null);
  results.guest = "ok";
  await context.close();
}

// 2. Attacker-controlled text renders inert: a client named and described
//    with HTML/JS, seen by a person whose display name is one too.
{
  const { context, page, dialogs } = await person({ width: 390, height: 844 });
  await page.goto(base + env("EVIL_AUTHORIZE_PATH"));
  await page.waitForSelector("form[action='/login']");
  await page.fill("#username", "mallory");
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("form[action='/authorize/consent']");
  const text = await page.locator("main").innerText();
  for (const literal of ["<img src=x onerror=alert(1)>", "<script>alert(2)</script>", "<svg onload=alert(3)>"]) {
    assert.ok(text.includes(literal), `the page should show ${literal} as text`);
  }
  // No element the payloads would have created exists.
  assert.equal(await page.locator("main img, main script, main svg").count(), 0);
  await page.waitForTimeout(200);
  assert.deepEqual(dialogs, [], "no payload ran");
  results.xss = "ok";
  await context.close();
}

// 3. Clickjacking (WEB-04): no page renders inside another site's frame
//    (`frame-ancestors 'none'`), error pages included. The attacker's page
//    is served from another origin on this machine (a page from a public
//    origin could not frame a loopback one at all: Chromium's Private
//    Network Access would block it and prove nothing). A control frame on
//    the same page shows that a page inside a frame would be seen.
{
  const { context, page } = await person();
  const framed = ["/login", "/device", "/account", "/authorize", "/admin/verify"];
  const body =
    framed.map((path, i) => `<iframe id="f${i}" src="${base}${path}"></iframe>`).join("") +
    `<iframe id="control" srcdoc="<main><form><input name=x></form></main>"></iframe>`;
  const attacker = http.createServer((_, response) => {
    response.writeHead(200, { "Content-Type": "text/html" });
    response.end(body);
  });
  await new Promise((listening) => attacker.listen(0, "127.0.0.1", listening));
  try {
    await page.goto(`http://127.0.0.1:${attacker.address().port}/`);
    await page.waitForLoadState("load");
    await page.waitForTimeout(500);
    assert.equal(await page.frameLocator("#control").locator("main").count(), 1, "control frame");
    for (const [i, path] of framed.entries()) {
      assert.equal(await page.frameLocator(`#f${i}`).locator("main").count(), 0, `${path} rendered inside a frame`);
    }
  } finally {
    attacker.close();
  }
  results.framing = "ok";
  await context.close();
}

// 4. An administrator signs in with her password and a TOTP code, finds the
//    client waiting for approval (its name a payload, shown as text),
//    approves it with her password again, and the client can then get
//    tokens; the audit log shows her decision.
{
  const { context, page, dialogs } = await person({ width: 1280, height: 900 });
  const clientId = env("PENDING_CLIENT");
  const clientName = env("PENDING_NAME");
  const clientToken = () =>
    post("/token", { grant_type: "client_credentials", scope: "slcs:certificate" }, clientId, env("PENDING_SECRET"));
  assert.equal((await clientToken()).status, 401, "a pending client gets no token");

  await page.goto(`${base}/admin`);
  await page.waitForSelector("form[action='/login']");
  await page.fill("#username", env("ADMIN_USERNAME"));
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(/\/admin\/verify$/), page.click("button[type=submit]")]);
  await shot(page, "admin-verify");
  await page.fill("#code", totp(env("TOTP_SECRET")));
  await Promise.all([page.waitForURL(/\/admin$/), page.click("button[type=submit]")]);
  const overview = await page.locator("main").innerText();
  for (const shown of ["Clients waiting for approval", clientName, "Certificate authority", "Token signing keys", "durable writes succeed"]) {
    assert.ok(overview.includes(shown), `the overview lacks ${shown}`);
  }
  await shot(page, "admin");

  await Promise.all([page.waitForURL(new RegExp(`/admin/clients/${clientId}$`)), page.click(`a[href='/admin/clients/${clientId}']`)]);
  const detail = await page.locator("main").innerText();
  assert.ok(detail.includes(clientName), "the name is shown as text");
  assert.equal(await page.locator("main img, main script").count(), 0, "no element from the payload");
  await shot(page, "admin-client");
  await page.fill("#approve_reason", "Reviewed with the ESGF data team");
  await page.fill("#approve_password", password);
  await Promise.all([page.waitForNavigation(), page.click("form.decision button.primary")]);
  assert.match(await page.locator("main").innerText(), /is approved: it may now obtain tokens/);

  const approved = await clientToken();
  assert.equal(approved.status, 200, JSON.stringify(approved.body));
  assert.ok(approved.body.access_token, "approved: a token");

  await page.goto(`${base}/admin/events?action=client.approve`);
  const events = await page.locator("main").innerText();
  assert.ok(events.includes("client.approve") && events.includes("Reviewed with the ESGF data team"), events);
  await shot(page, "admin-events");
  await page.goto(`${base}/admin/issuances?client=broker-a`);
  const issued = await page.locator("main").innerText();
  assert.match(issued, /revoked/, "broker A's certificate, revoked with the approval");
  await shot(page, "admin-certificates");
  await page.waitForTimeout(200);
  assert.deepEqual(dialogs, [], "no payload ran");
  results.admin = "ok";
  await context.close();
}

await browser.close();
console.log(JSON.stringify(results));
