// A real OpenID Connect provider (panva/oidc-provider, OpenID Certified) on loopback, for dbportal's
// identity tests and for trying single sign-on locally (docs/identity.md).
//
//   node server.mjs <state-dir> [port]
//
// <state-dir>/config.json (written by the test fixture or by hand):
//   {"client_id": "...", "client_secret": "...", "redirect_uris": ["http://127.0.0.1:8000/login/oidc/callback/"]}
// <state-dir>/users.json, read again at every sign-in and token, so a test changes groups live:
//   {"erin": {"email": "erin@example.test", "name": "Erin", "groups": ["db-payments"]}}
// <state-dir>/keys.json: the signing keys (JWKS with private parts). Generated when missing;
// delete it and restart to rotate (a new "kid").
// The login form is the provider's own development form: any password, but only users listed in
// users.json exist. Consent is granted for the one configured client (a first-party portal).
// Prints one JSON line {"issuer": ...} on stdout once it listens on 127.0.0.1.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import crypto from 'node:crypto';

import Provider from 'oidc-provider';

// OIDC_CLOCK_SKEW_SECONDS: this provider's clock runs ahead (or behind) of the machine's, as a
// provider's clock can: the tests of the portal's clock-skew leeway set it.
const skewSeconds = Number(process.env.OIDC_CLOCK_SKEW_SECONDS || 0);
if (skewSeconds) {
  const realNow = Date.now;
  Date.now = () => realNow() + skewSeconds * 1000;
}

const stateDir = process.argv[2];
const wantedPort = Number(process.argv[3] || 0);
if (!stateDir) {
  console.error('usage: node server.mjs <state-dir> [port]');
  process.exit(2);
}
const readJson = (name) => JSON.parse(fs.readFileSync(path.join(stateDir, name), 'utf8'));
const config = readJson('config.json');

function signingKeys() {
  const file = path.join(stateDir, 'keys.json');
  if (!fs.existsSync(file)) {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = privateKey.export({ format: 'jwk' });
    jwk.kid = crypto.randomBytes(8).toString('hex');
    jwk.use = 'sig';
    jwk.alg = 'RS256';
    fs.writeFileSync(file, JSON.stringify({ keys: [jwk] }), { mode: 0o600 });
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

const GROUPS_CLAIM = config.groups_claim || 'groups';
const CLAIMS = ['email', 'name', 'preferred_username', GROUPS_CLAIM];

async function findAccount(ctx, sub) {
  const users = readJson('users.json');
  if (!Object.hasOwn(users, sub)) return undefined;
  return {
    accountId: sub,
    async claims() {
      const user = readJson('users.json')[sub] || {};
      return {
        sub,
        email: user.email || `${sub}@example.test`,
        name: user.name || sub,
        preferred_username: user.preferred_username || sub,
        [GROUPS_CLAIM]: user.groups || [],
      };
    },
  };
}

const server = http.createServer();
server.listen(wantedPort, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: config.client_id,
      client_secret: config.client_secret,
      redirect_uris: config.redirect_uris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: signingKeys(),
    cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
    claims: { openid: ['sub'], email: ['email'], profile: ['name', 'preferred_username'], groups: [GROUPS_CLAIM] },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    // Refresh tokens for the portal's periodic check. The provider drops offline_access unless
    // prompt=consent (OpenID Connect Core 11); Okta and Entra ID do not ask for it: neither do we.
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    // The groups in the ID token itself, as Keycloak, Okta and Entra ID can be set up to do.
    conformIdTokenClaims: false,
    // OIDC_ID_TOKEN_TTL: shorter ID tokens for the expiry test (default one hour, as the package's).
    ttl: { IdToken: Number(process.env.OIDC_ID_TOKEN_TTL || 3600) },
    pkce: { required: () => true },
    findAccount,
    // A first-party client: consent is granted without a second page.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        const existing = await ctx.oidc.provider.Grant.find(grantId);
        if (existing) return existing;
      }
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid email profile groups');
      grant.addOIDCClaims(CLAIMS);
      await grant.save();
      return grant;
    },
    features: { devInteractions: { enabled: true } },
  });
  provider.proxy = false;
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
