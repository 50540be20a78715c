// What a graphql-ws subscription delivers, collected: shared by the client scripts.

/** The last result of an operation (a query or mutation gives one), once it completes. */
export function once(client, payload) {
  return new Promise((resolve, reject) => {
    let result;
    client.subscribe(payload, {
      next: (value) => (result = value),
      error: reject,
      complete: () => resolve(result),
    });
  });
}

/** Every result of an operation, in order, once it completes. */
export function all(client, payload) {
  return new Promise((resolve, reject) => {
    const values = [];
    client.subscribe(payload, {
      next: (value) => values.push(value),
      error: reject,
      complete: () => resolve(values),
    });
  });
}
