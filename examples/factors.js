// Demo job: prime factorisation. Input: {"num": <integer>} as the request body.
// Output: the prime factors joined by commas, e.g. {"num":600} -> 2,2,2,3,5,5.
export default {
  async fetch(request) {
    let input;
    try {
      input = await request.json();
    } catch {
      return new Response("invalid input: expected JSON like {\"num\": 600}", { status: 400 });
    }
    let n = input && input.num;
    if (!Number.isSafeInteger(n) || n < 2) {
      return new Response("invalid input: num must be an integer of at least 2", { status: 400 });
    }
    const factors = [];
    for (let p = 2; p * p <= n; p++) {
      while (n % p === 0) {
        factors.push(p);
        n /= p;
      }
    }
    if (n > 1) factors.push(n);
    return new Response(factors.join(","));
  },
};
