// GraphiQL over this server: queries and mutations over HTTP (`POST /graphql`, with the
// token as a bearer header), subscriptions over graphql-transport-ws (the token in
// `connection_init`). `?query=` opens with a document; `?token=` sets the token for this tab.
(function () {
  const params = new URLSearchParams(location.search);
  if (params.get('token')) sessionStorage.setItem('streamer.token', params.get('token'));
  const token = sessionStorage.getItem('streamer.token');
  const configured = document.querySelector('meta[name="streamer-websocket"]').content;
  const socketUrl = configured && !configured.startsWith('%')
    ? configured
    : location.origin.replace(/^http/, 'ws') + '/graphql';
  const headers = token ? { authorization: 'Bearer ' + token } : {};
  const wsClient = graphqlWs.createClient({
    url: socketUrl,
    connectionParams: token ? { authorization: 'Bearer ' + token } : undefined,
    lazy: true,
  });
  const fetcher = GraphiQL.createFetcher({ url: '/graphql', headers, wsClient });
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {
      fetcher,
      // A document in the URL replaces what GraphiQL kept from the last visit.
      query: params.get('query') || undefined,
      defaultQuery: '{ actions }',
      defaultEditorToolsVisibility: false,
    }),
  );
})();
