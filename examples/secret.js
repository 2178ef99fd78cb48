// Demo job with a secret (TEE generation): the job's secret arrives as env.secret, an
// ArrayBuffer, the only key in env. Output: the secret's length and the secret reversed, e.g. a
// secret "hunter2" -> 7:2retnuh. A real job would use it as an API key and never print it.
export default {
  async fetch(request, env) {
    if (!(env.secret instanceof ArrayBuffer)) {
      return new Response("this job needs a secret: create it with a secret id", { status: 400 });
    }
    const text = new TextDecoder().decode(env.secret);
    return new Response(`${env.secret.byteLength}:${[...text].reverse().join("")}`);
  },
};
