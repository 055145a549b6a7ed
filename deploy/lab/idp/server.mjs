// The lab's company OpenID Connect provider (oidc-provider), authenticating users by
// LDAP bind against the lab slapd. Started by rolegate_lab.idp.IdP:
//   node server.mjs CONFIG.json
// CONFIG holds issuer, port, ldap settings and the clients (see rolegate_lab/idp.py); a client whose
// grant_types are ['client_credentials'] is an app (a machine): no redirect, no user.
// It is a lab: in-memory storage, keys made at start, plain http on 127.0.0.1.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import { AndFilter, Client, EqualityFilter } from 'ldapts';
import Provider, { errors } from 'oidc-provider';

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node server.mjs CONFIG.json');
  process.exit(2);
}
const cfg = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const log = (...args) => console.log(new Date().toISOString(), ...args);

// ---------------------------------------------------------------- directory
const ldapCfg = cfg.ldap;

async function withServiceBind(fn) {
  const client = new Client({ url: ldapCfg.url, timeout: 5000, connectTimeout: 5000 });
  try {
    await client.bind(ldapCfg.bind_dn, ldapCfg.bind_password);
    return await fn(client);
  } finally {
    await client.unbind().catch(() => {});
  }
}

async function findUserEntry(client, uid) {
  const filter = new AndFilter({
    filters: [
      new EqualityFilter({ attribute: 'objectClass', value: 'inetOrgPerson' }),
      new EqualityFilter({ attribute: 'uid', value: uid }),
    ],
  });
  const { searchEntries } = await client.search(ldapCfg.base_dn, {
    scope: 'sub',
    filter,
    attributes: ['uid', 'cn', 'displayName', 'givenName', 'sn', 'mail', 'memberOf'],
    sizeLimit: 2,
  });
  return searchEntries.length === 1 ? searchEntries[0] : null;
}

const asList = (value) => (value === undefined ? [] : Array.isArray(value) ? value : [value]);
const first = (value) => asList(value)[0];

// Group names of a user: the cn of every group in memberOf, and of the groups those are
// nested in (memberOf on group entries), cycle-safe.
async function groupNames(client, memberOf) {
  const seen = new Set();
  const names = new Set();
  const queue = asList(memberOf).map(String);
  while (queue.length) {
    const dn = queue.shift();
    const key = dn.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    try {
      const { searchEntries } = await client.search(dn, { scope: 'base', attributes: ['cn', 'memberOf'] });
      for (const entry of searchEntries) {
        if (entry.cn) names.add(String(first(entry.cn)));
        queue.push(...asList(entry.memberOf).map(String));
      }
    } catch (err) {
      log('group lookup failed', dn, err.message);
    }
  }
  return [...names].sort();
}

async function loadAccount(uid) {
  return withServiceBind(async (client) => {
    const entry = await findUserEntry(client, uid);
    if (!entry) return null;
    return {
      sub: String(first(entry.uid)),
      preferred_username: String(first(entry.uid)),
      name: String(first(entry.displayName) ?? first(entry.cn) ?? ''),
      given_name: first(entry.givenName) && String(first(entry.givenName)),
      family_name: first(entry.sn) && String(first(entry.sn)),
      email: first(entry.mail) && String(first(entry.mail)),
      email_verified: Boolean(first(entry.mail)),
      groups: await groupNames(client, entry.memberOf),
    };
  });
}

// true / false for a login attempt; throws when the directory cannot be reached.
async function checkPassword(uid, password) {
  if (!uid || !password) return null; // an empty password would be an anonymous bind
  const dn = await withServiceBind(async (client) => {
    const entry = await findUserEntry(client, uid);
    return entry ? entry.dn : null;
  });
  if (!dn) return null;
  const client = new Client({ url: ldapCfg.url, timeout: 5000, connectTimeout: 5000 });
  try {
    await client.bind(dn, password);
    return uid;
  } catch (err) {
    if (err && err.code === 49) return null; // invalidCredentials
    throw err;
  } finally {
    await client.unbind().catch(() => {});
  }
}

async function findAccount(ctx, sub) {
  const claims = await loadAccount(sub);
  if (!claims) return undefined;
  return {
    accountId: sub,
    async claims() {
      return claims;
    },
  };
}

// ---------------------------------------------------------------- keys and clients
function signingKey(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}` };
}
const jwks = {
  keys: [
    signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
    signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
  ],
};

const pkceOptional = new Set(cfg.pkce_optional || []);
const resources = new Set([cfg.audience, ...(cfg.extra_resources || [])]);
const accessTokenAlg = cfg.access_token_alg || 'ES256';

// ---------------------------------------------------------------- pages
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:22em;margin:3em auto}input,button{display:block;width:100%;margin:.4em 0;padding:.4em}.error{color:#b00}</style>
</head><body><h1>${esc(title)}</h1>${body}</body></html>`;
}

function loginPage(uid, { error = '', login = '', client = '' } = {}) {
  return page('Acme Facility Services sign-in', `
<p>Sign in to ${esc(client)}</p>
${error ? `<p class="error" id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}" autocomplete="off">
  <label>Username <input name="login" value="${esc(login)}" autofocus required></label>
  <label>Password <input name="password" type="password" required></label>
  <button type="submit">Sign in</button>
</form>`);
}

// ---------------------------------------------------------------- provider
const provider = new Provider(cfg.issuer, {
  clients: cfg.clients,
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    id_token_signed_response_alg: 'ES256',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  jwks,
  findAccount,
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username', 'given_name', 'family_name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  // ID tokens carry the profile/email/groups claims in the code flow too: the access
  // token is for the resource server (below), so it cannot be used at userinfo.
  conformIdTokenClaims: false,
  pkce: { required: (ctx, client) => !pkceOptional.has(client.clientId) },
  cookies: {
    keys: [crypto.randomBytes(32).toString('hex')],
    // plain http on 127.0.0.1: cookies must not be marked Secure (ctx.secure is false)
    long: { httpOnly: true, sameSite: 'lax' },
    short: { httpOnly: true, sameSite: 'lax' },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // oidc-provider's SSRF guard refuses loopback targets, yet in the lab every client (and its
  // back-channel logout URI) is on 127.0.0.1. Allow loopback only, and nothing else.
  fetch: (url, options) => {
    const host = new URL(url).hostname;
    if (!['127.0.0.1', 'localhost', '[::1]'].includes(host)) {
      return Promise.reject(new Error(`lab IdP only calls loopback addresses, not ${host}`));
    }
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // seconds; the Python side may override any of them (e.g. short AccessToken for expiry tests)
  ttl: {
    AccessToken: 600, AuthorizationCode: 60, IdToken: 3600, Interaction: 3600,
    RefreshToken: 14 * 24 * 3600, Session: 14 * 24 * 3600, Grant: 14 * 24 * 3600,
    ...(cfg.ttl || {}),
  },
  extraTokenClaims: async (ctx, token) => {
    if (token.kind !== 'AccessToken' || !token.accountId) return undefined;
    const claims = await loadAccount(token.accountId);
    if (!claims) return undefined;
    return { preferred_username: claims.preferred_username, email: claims.email, name: claims.name, groups: claims.groups };
  },
  features: {
    devInteractions: { enabled: false },
    // apps (rolegate's apps: section) get a JWT access token for their own audience with the OAuth
    // client-credentials grant: token request with resource=<apps audience> (RFC 8707); sub = client_id
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.body = page('Sign out', `${form}<p>Sign out of Acme Facility Services?</p>
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = page('Signed out', '<p id="signed-out">You are signed out.</p>');
      },
    },
    resourceIndicators: {
      enabled: true,
      // a plain code flow (no resource parameter) still gets a JWT access token for the audience
      defaultResource: async (ctx, client, oneOf) => oneOf || cfg.audience,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (!resources.has(resourceIndicator)) throw new errors.InvalidTarget();
        return {
          scope: 'api',
          audience: resourceIndicator,
          accessTokenTTL: cfg.ttl?.AccessToken ?? 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: accessTokenAlg } },
        };
      },
    },
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<p class="error" id="error">${esc(out.error)}: ${esc(out.error_description)}</p>`);
  },
});
provider.proxy = Boolean(cfg.proxy);
for (const event of ['server_error', 'authorization.error', 'grant.error', 'backchannel.error', 'end_session.error']) {
  provider.on(event, (...args) => {
    const err = args.find((a) => a instanceof Error);
    const detail = err ? `${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}${err.cause ? ` cause: ${err.cause.message || err.cause}` : ''}` : '';
    log(event, detail);
  });
}
provider.on('backchannel.success', (client) => log('backchannel logout sent to', client.clientId));

// ---------------------------------------------------------------- interactions
async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function send(res, status, html) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(html);
}

// Every lab client is first party: consent is granted without asking.
async function grantConsent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const savedId = await grant.save();
  await provider.interactionFinished(req, res, { consent: grantId ? {} : { grantId: savedId } }, { mergeWithLastSubmission: true });
}

async function interaction(req, res, uid) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, page('Sign-in expired', `<p class="error" id="error">${esc(err.message)}: start the sign-in again.</p>`));
  }
  if (details.uid !== uid) return send(res, 400, page('Sign-in error', '<p class="error" id="error">interaction mismatch</p>'));
  const clientId = details.params.client_id;
  if (details.prompt.name === 'consent') return grantConsent(req, res, details);
  if (details.prompt.name !== 'login') {
    return send(res, 400, page('Sign-in error', `<p class="error" id="error">unsupported prompt ${esc(details.prompt.name)}</p>`));
  }
  if (req.method === 'GET') return send(res, 200, loginPage(uid, { client: clientId }));
  if (req.method !== 'POST') return send(res, 405, page('Sign-in error', '<p class="error">method not allowed</p>'));

  const form = await readForm(req);
  const login = (form.get('login') || '').trim();
  const password = form.get('password') || '';
  let accountId;
  try {
    accountId = await checkPassword(login, password);
  } catch (err) {
    log('directory error during login:', err.message);
    return send(res, 503, loginPage(uid, { error: 'The directory is unavailable, try again later.', login, client: clientId }));
  }
  if (!accountId) {
    log('login failed for', JSON.stringify(login));
    return send(res, 401, loginPage(uid, { error: 'Invalid username or password.', login, client: clientId }));
  }
  log('login ok for', accountId);
  await provider.interactionFinished(req, res, { login: { accountId, remember: true } }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------- server
const providerCallback = provider.callback();
const server = http.createServer(async (req, res) => {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)\/?(?:\?.*)?$/.exec(req.url || '');
  if (!match) return providerCallback(req, res);
  try {
    await interaction(req, res, match[1]);
  } catch (err) {
    log('interaction error:', err.stack || err.message);
    if (!res.headersSent) send(res, 500, page('Sign-in error', '<p class="error" id="error">internal error</p>'));
    else res.end();
  }
});
server.listen(cfg.port, cfg.host || '127.0.0.1', () => {
  log(`oidc-provider listening, issuer ${cfg.issuer}, discovery ${cfg.issuer}/.well-known/openid-configuration`);
});
server.on('error', (err) => {
  console.error(`cannot listen: ${err.message}`);
  process.exit(1);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 500).unref());
