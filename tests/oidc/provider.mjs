// Runs panva's oidc-provider (installed from npm by scripts/test.sh, never written here) on
// 127.0.0.1 for the tests in this folder. This file is its configuration only: one client for
// the client_credentials grant, JWT access tokens by resource indicator, and the signing keys.
//
//   node provider.mjs '{"modules": ".../node_modules", "port": 0, "alg": "ES256",
//                       "keys_dir": "/tmp/...", "kids": ["k2", "k1"]}'
//
// `kids` are the provider's keys, the first one signing: each is read from `keys_dir/<kid>.json`
// or made (and saved there) on first use, so a restart with another list rotates the keys the
// way a provider's operator does. Port 0 lets the system choose; a restart passes the port it
// had, so the issuer stays the same. Prints one JSON line, {"issuer", "port"}, once it listens.
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(process.argv[2]);
const { default: Provider } = await import(
  pathToFileURL(join(config.modules, 'oidc-provider', 'lib', 'index.js')).href
);

function signingKey(kid) {
  const file = join(config.keys_dir, `${kid}.json`);
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  const { privateKey } = config.alg.startsWith('ES')
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: config.alg, use: 'sig' };
  writeFileSync(file, JSON.stringify(jwk));
  return jwk;
}

const keys = config.kids.map(signingKey);
// The resource servers (APIs) tokens can be asked for; each token's `aud` is the one asked.
const resources = ['urn:jwt-gate:orders', 'urn:jwt-gate:billing'];

let handle = (_request, response) => {
  response.statusCode = 503;
  response.end();
};
const server = createServer((request, response) => handle(request, response));
server.listen(config.port, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    jwks: { keys },
    clients: [
      {
        client_id: 'gate-test',
        client_secret: 'a client secret for the tests only',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
        id_token_signed_response_alg: config.alg,
        scope: 'orders:read orders:write',
      },
    ],
    scopes: ['orders:read', 'orders:write'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resources[0],
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          if (!resources.includes(resource)) {
            throw new Provider.errors.InvalidTarget();
          }
          return {
            scope: 'orders:read orders:write',
            audience: resource,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: config.alg } },
          };
        },
      },
    },
  });
  handle = provider.callback();
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});
