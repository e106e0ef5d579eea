// node oidc-provider (npm) as a client-credentials peer for scripts/bench-tokens:
// two cluster workers, in-memory, ES256 JWT access tokens, HTTPS with the
// given certificate. Usage: node oidc-provider-server.mjs PORT CERT KEY
// (install with `npm install oidc-provider@9` in this directory; nothing of
// it is committed).
import cluster from 'node:cluster';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const [, , port, certFile, keyFile] = process.argv;
const jwksFile = `${keyFile}.jwks.json`;

if (cluster.isPrimary) {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: randomUUID() };
  fs.writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }), { mode: 0o600 });
  for (let i = 0; i < 2; i += 1) cluster.fork();
} else {
  const provider = new Provider(`https://localhost:${port}`, {
    clients: [{
      client_id: 'bench',
      client_secret: 'bench-secret-bench-secret-bench-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    }],
    jwks: JSON.parse(fs.readFileSync(jwksFile, 'utf8')),
    scopes: ['api'],
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'https://rs.example',
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api',
          audience: 'https://rs.example',
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
  });
  https
    .createServer({ key: fs.readFileSync(keyFile), cert: fs.readFileSync(certFile) }, provider.callback())
    .listen(Number(port), '127.0.0.1');
}
