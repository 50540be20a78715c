// GraphiQL over this server: queries and mutations over HTTP (`POST /graphql`, with the
// token as a bearer header), subscriptions over graphql-transport-ws (the token in
// `connection_init`). The token is the one given to the dashboard in this tab (session
// storage, never the URL). `?query=` opens with a document.
(function () {
  const params = new URLSearchParams(location.search);
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
