// handlers.hpp - one handler per route (routes.cpp lists them).  Each answers
// through x->reply() exactly once, possibly later from a pool thread.
#pragma once

#include "exchange.hpp"

namespace rsproxy {

class Services;

void handle_root(Services&, const ExchangePtr&);
void handle_healthz(Services&, const ExchangePtr&);
void handle_readyz(Services&, const ExchangePtr&);
void handle_metrics(Services&, const ExchangePtr&);
void handle_openapi(Services&, const ExchangePtr&);
void handle_recommendations(Services&, const ExchangePtr&);
void handle_recommendations_items(Services&, const ExchangePtr&);
void handle_explanations(Services&, const ExchangePtr&);
void handle_similar(Services&, const ExchangePtr&);
void handle_products(Services&, const ExchangePtr&);
void handle_history(Services&, const ExchangePtr&);
void handle_models_active(Services&, const ExchangePtr&);
void handle_evaluations(Services&, const ExchangePtr&);

}  // namespace rsproxy
